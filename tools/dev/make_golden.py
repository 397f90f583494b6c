"""Write the golden files of tests/test_golden.py and tests/test_golden_training.py by running the
AUTHORS' SCCAN (their code from OFFICIAL_SCCAN, see tools/dev/reference.py) in float64:

    OFFICIAL_SCCAN=/path/to/their/clone python tools/dev/make_golden.py [--out tests/golden] [NAME ...]

NAME: cases of tools/dev/golden.py CASES and/or its TRAINING name (default: all). Inputs and weights
come from tools/dev/golden.py (seeds only), so the files hold outputs alone.
"""
import argparse
import os
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # up from tools/dev/
sys.path.insert(0, REPO)

from tools.dev import golden, reference  # noqa: E402
from util.seeding import without_dropout  # noqa: E402

NOTE = ("outputs of the authors' SCCAN (github.com/Sam1224/SCCAN) in float64, written by "
        "tools/dev/make_golden.py; inputs and weights from tools/dev/golden.py")


def their_model(layers, shot, root):
    """Their OneModel with golden.make_state_dict weights, in float64."""
    net = reference.build(layers, shot, root)
    net.load_state_dict(golden.make_state_dict(net.state_dict()), strict=True)
    return net.double()


def provenance(root):
    """Metadata stored in every file: torch version, note, their commit where root is a git clone."""
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True, text=True)
    return dict(torch=str(torch.__version__), note=NOTE,
                official_commit=commit.stdout.strip() if commit.returncode == 0 else 'unknown')


# ---- inference cases -----------------------------------------------------------------------------
def record_internals(net):
    """Wrap, on this instance only, what the golden files keep from inside their forward:
    OneModel.generate_prior (prior B×1×64×64 after shot averaging), each SwinTransformerBlock's
    generate_indices in model/swin_sccan.py (aligned support patch per query patch, B×P) and the
    SwinTransformer output (query tokens after norm0, B×C×64×64). Returns the dict they fill."""
    captured = {'pam_index': []}

    def recording(method, store):
        def wrapper(*args, **kwargs):
            out = method(*args, **kwargs)
            store(out)
            return out
        return wrapper

    net.generate_prior = recording(net.generate_prior, lambda out: captured.update(prior=out))
    for block in net.transformer.layers[0].blocks:
        block.generate_indices = recording(block.generate_indices, captured['pam_index'].append)
    net.transformer.register_forward_hook(lambda m, i, out: captured.update(transformer_out=out[0]))
    return captured


def run_case(name, case, root):
    """Golden payload of one inference case (their model in eval mode, no autograd)."""
    net = their_model(case['layers'], case['shot'], root).eval()
    captured = record_internals(net)
    inputs = golden.episode_inputs(case)
    with torch.no_grad(), reference.float_casts_to(torch.float64):
        logits = net(inputs['query'], inputs['support'], inputs['support_masks'], None)
        # Their training loss (OneModel.criterion_dice, model/loss.py WeightedDiceLoss).
        dice = net.criterion_dice(logits, inputs['query_mask'].long())
    assert len(captured['pam_index']) == len(net.transformer.layers[0].blocks)
    return dict(case=dict(case, name=name), logits=logits, prior=captured['prior'],
                pam_index=captured['pam_index'],
                transformer_out=golden.subsample_transformer_out(captured['transformer_out']),
                dice_loss=dice.item(), **provenance(root))


# ---- training trajectory -------------------------------------------------------------------------
def run_training(root):
    """Their train_sccan.train for len(TRAINING['step_seeds']) iterations, dropout off: poly lr,
    forward with the query mask, loss = main + 1.0·aux1 + 1.0·aux2 (their aux weights), both
    optimisers zeroed, backward, both stepped."""
    t = golden.TRAINING
    net = without_dropout(their_model(t['layers'], t['shot'], root))
    sgd, adamw = reference.optimizers(net, t['base_lr'], t['momentum'], t['weight_decay'])
    # Their OneModel.get_optim fixes the AdamW lr; the test gives ours TRAINING's value.
    assert [g['lr'] for g in adamw.param_groups] == [t['transformer_lr']]
    reference.train_mode(net, root)
    initial = golden.learnable_parameters(net)
    steps = []
    for iteration, batch in enumerate(golden.training_batches(), start=1):
        reference.poly_learning_rate(sgd, t['base_lr'], iteration, t['max_iter'], t['power'],
                                     t['index_split'], root)
        with reference.float_casts_to(torch.float64):
            _, main_loss, aux_loss1, aux_loss2 = net(x=batch['query'], s_x=batch['support'],
                                                     s_y=batch['support_masks'], y_m=batch['query_mask'])
        loss = main_loss + 1.0 * aux_loss1 + 1.0 * aux_loss2
        sgd.zero_grad()
        adamw.zero_grad()
        loss.backward()
        sgd.step()
        adamw.step()
        steps.append(dict(iteration=iteration, loss=loss.item(),
                          sgd_lr=[g['lr'] for g in sgd.param_groups],
                          adamw_lr=[g['lr'] for g in adamw.param_groups]))
    view = golden.parameter_view(initial, golden.learnable_parameters(net))
    return dict(training=dict(t), steps=steps, parameters=view, **provenance(root))


# ---- command line --------------------------------------------------------------------------------
def summary(name, payload):
    if 'steps' in payload:
        lines = [f"  step {s['iteration']}: loss {s['loss']:.12f}  sgd lr {s['sgd_lr'][0]:.6g} "
                 f"(× {len(s['sgd_lr'])} groups)  adamw lr {s['adamw_lr'][0]:g}" for s in payload['steps']]
        moved = sum(float(p['delta_sq']) for p in payload['parameters'].values()) ** 0.5
        return '\n'.join([f"{name}: {len(payload['parameters'])} learnable tensors, "
                          f"‖Δθ‖ {moved:.6g}"] + lines)
    patches = [tuple(index.unique().tolist()) for index in payload['pam_index']]
    return (f"{name}: |logits| ≤ {payload['logits'].abs().max().item():.4g}, "
            f"dice {payload['dice_loss']:.10f}, "
            f"prior in [{payload['prior'].min().item():.3g}, {payload['prior'].max().item():.3g}], "
            f"distinct aligned support patches per block {[len(p) for p in patches]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('names', nargs='*', help='cases to write (default: all)')
    parser.add_argument('--out', default=os.path.join(REPO, 'tests', 'golden'))
    parser.add_argument('--official', default=None, help='their clone (default: $OFFICIAL_SCCAN)')
    args = parser.parse_args(argv)
    known = list(golden.CASES) + [golden.TRAINING['name']]
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown names {unknown}; known: {known}")
    try:
        root = reference.official_root(args.official)
    except RuntimeError as error:
        raise SystemExit(str(error))
    os.makedirs(args.out, exist_ok=True)
    for name in args.names or known:
        start = time.perf_counter()
        payload = (run_training(root) if name == golden.TRAINING['name']
                   else run_case(name, golden.CASES[name], root))
        path = os.path.join(args.out, f'{name}.pt')
        golden.save(path, payload)
        print(summary(name, payload))
        print(f"  → {path} ({os.path.getsize(path) / 1024:.0f} KiB, {time.perf_counter() - start:.1f} s)")


if __name__ == '__main__':
    main()
