"""The evaluation feature cache returns exactly what recomputation returns, runs the backbone once
per distinct image, and keeps within its byte budget."""
import pytest
import torch

from helpers import check_cached_evaluation, make_pascal_config
from model import build_sccan
from util.evaluation.feature_cache import GB, FeatureCache
from util.evaluation.replay import call_on_buffers


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return build_sccan('tiny').eval()


def entry_bytes(net, size=33):
    features = net.encode(torch.zeros(1, 3, size, size))
    return sum(t[0].numel() * t.element_size() for t in features)


def test_cached_features_equal_recomputed_ones(net):
    images = torch.randn(3, 3, 33, 33)
    cache = FeatureCache(budget_gb=1)
    batch = images[[0, 1, 0, 2]]
    keys = ['a', 'b', 'a', 'c']
    first = cache.encode(net, batch, keys)
    again = cache.encode(net, batch, keys)
    direct = net.encode(batch)
    for cached in (first, again):
        assert torch.equal(cached.mid, direct.mid) and torch.equal(cached.high, direct.high)
    assert cache.backbone_passes == 3                        # a, b, c once each
    assert (cache.hits, cache.misses) == (5, 3)


def test_budget_is_respected_least_recently_used_goes_first(net):
    size = entry_bytes(net)
    cache = FeatureCache(budget_gb=2.5 * size / GB)          # room for two entries
    images = torch.randn(3, 3, 33, 33)
    cache.encode(net, images[:1], ['a'])
    cache.encode(net, images[1:2], ['b'])
    cache.encode(net, images[:1], ['a'])                      # a is now the most recent
    cache.encode(net, images[2:3], ['c'])                     # evicts b
    assert list(cache.entries) == ['a', 'c'] and cache.bytes == 2 * size <= cache.budget
    cache.encode(net, images[1:2], ['b'])
    assert cache.backbone_passes == 4


def test_entry_larger_than_the_budget_is_computed_not_stored(net):
    cache = FeatureCache(budget_gb=entry_bytes(net) / 2 / GB)
    out = cache.encode(net, torch.randn(1, 3, 33, 33), ['a'])
    assert out.mid.shape[0] == 1 and not cache.entries and cache.bytes == 0


def test_host_copies_are_not_views_of_the_batch(net):
    cache = FeatureCache(budget_gb=1, device='host')
    cache.encode(net, torch.randn(2, 3, 33, 33), ['a', 'b'])
    mid, _ = cache.entries['a']
    assert mid.untyped_storage().nbytes() == mid.numel() * mid.element_size()


def test_bad_arguments():
    with pytest.raises(ValueError, match='budget must be > 0'):
        FeatureCache(0)
    with pytest.raises(ValueError, match="'same' or 'host'"):
        FeatureCache(1, device='gpu')


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    return make_pascal_config(str(tmp_path_factory.mktemp('cache')), n_train=0, n_val=60)


@pytest.mark.parametrize('shot, capture', [(1, None), (5, call_on_buffers)],
                         ids=['1-shot', '5-shot-replayed'])
def test_evaluation_with_the_cache_equals_evaluation_without(config, shot, capture):
    """5-shot: what follows the backbone goes through the replay's buffers (util.evaluation.replay),
    as it is replayed from CUDA graphs on a GPU."""
    check_cached_evaluation(config, shot, torch.device('cpu'), capture=capture)
