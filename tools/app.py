"""Segment your own images in the browser: paint the support masks, see the result, download it.

    pip install -r requirements-app.txt     # once: Gradio, an optional extra
    python tools/app.py                     # then open http://127.0.0.1:7860
    python tools/app.py --port 8000 --device cpu

A local web page (127.0.0.1 only) over predict_sccan.py's steps (util/prediction/app.py does the
work): 1-5 supports, each an image with its mask painted on it or uploaded; query images; a
checkpoint found under exp/ (`make demo` trains one), the model shipped in examples/, or given by
its path. Run shows each query with its mask and offers each mask (0/255 PNG, the same bytes
predict_sccan.py writes) and a zip of all. Files live in the app's own temporary folder, removed
when the app stops (Ctrl-C).
"""
import os
import shutil
import signal
import socket
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from util.cli import ArgumentParser, non_negative_int, run_main  # noqa: E402
from util.datasets import SYNTHETIC_LISTS  # noqa: E402
from util.prediction.app import (MAX_SUPPORTS, SegmentationApp, SupportSlot,  # noqa: E402
                                 find_checkpoints)
from util.prediction.visualize import ALPHA, SUPPORT_COLOUR  # noqa: E402

HINT = 'the app needs Gradio, an optional extra: pip install -r requirements-app.txt'
HOST = '127.0.0.1'
EXAMPLES = os.path.join(REPO, 'examples')      # the shipped model and its example
SHIPPED_MODEL = os.path.join(EXAMPLES, 'sccan_synthetic_tiny.pth')
INTRO = """# SCCAN: segment your own images
Show the model an object in one to five **support** images, and it finds that kind of object in
your **query** images, even a kind it was never trained on.

1. **Checkpoint**: pick a trained model. The one shipped in `examples/` knows only the synthetic
   benchmark's shapes and colours (try the example); for photos give a real checkpoint's path.
2. **Support 1**: upload an image, then paint the object on it with the brush (or upload a mask
   file). More supports, each in its own tab, help.
3. **Queries**: upload the images to segment, and press **Run**.
"""


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--port', type=non_negative_int, default=7860,
                   help='port on 127.0.0.1 (0: any free one)')
    p.add_argument('--exp', help='folder searched for checkpoints (the runs\' snapshot/ folders; '
                                 'default: exp/ of the repository)')
    p.add_argument('--data', default=EXAMPLES,
                   help='synthetic benchmark for the example button (default: the excerpt shipped '
                        'in examples/; make demo writes the whole one in data/synthetic)')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    return p.parse_args(argv)


def free_port(port):
    """`port` when it is free on HOST (0: any free port), else OSError saying what to do."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as the web server binds
        try:
            s.bind((HOST, port))
        except OSError:
            raise OSError(f'port {port} on {HOST} is taken (is the app running already?); '
                          'choose another with --port N, or --port 0 for any free one') from None
        return s.getsockname()[1]


def import_gradio():
    try:
        import gradio
    except ImportError as e:
        raise ImportError(f'{HINT} ({e})') from None
    return gradio


def shown_path(path):
    """`path` relative to the current folder when it lies below it, as a user would type it."""
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def checkpoint_choices(exp_root):
    """(label, path) of the checkpoints under exp_root for the chooser, labelled from exp/ on,
    then the shipped model."""
    shipped = [(f'{shown_path(SHIPPED_MODEL)} (shipped; knows only the synthetic shapes)', SHIPPED_MODEL)]
    return [(os.path.relpath(path, os.path.dirname(exp_root)), path)
            for path in find_checkpoints(exp_root)] + (shipped if os.path.isfile(SHIPPED_MODEL) else [])


def build_page(gr, app, exp_root, data_root):
    """The page: Gradio components wired to the handlers of `app` (util.prediction.app)."""
    brush = gr.Brush(colors=[('rgb({}, {}, {})'.format(*SUPPORT_COLOUR), ALPHA)], color_mode='fixed')
    choices = checkpoint_choices(exp_root)
    with gr.Blocks(title='SCCAN: segment your own images') as page:
        gr.Markdown(INTRO)
        with gr.Row():
            checkpoint = gr.Dropdown(
                choices, value=choices[0][1] if choices else None, allow_custom_value=True,
                label='Checkpoint', scale=4, elem_id='checkpoint',
                info=f'runs found under {shown_path(exp_root)}, newest first, then the shipped '
                     'model; or type the path of a .pth')
            rescan = gr.Button('Look again', scale=0, size='sm')
        example = gr.Button('Try an example from the synthetic benchmark', elem_id='example',
                            visible=os.path.isfile(os.path.join(data_root, SYNTHETIC_LISTS['val'])))
        images, masks, editors, boxes = [], [], [], []
        with gr.Tabs():
            for k in range(1, MAX_SUPPORTS + 1):
                with gr.Tab(f'Support {k}', id=f'support-{k}', elem_id=f'support-{k}-tab'):
                    with gr.Row():
                        with gr.Column(scale=1):
                            image = gr.File(label=f'Support {k}: image', file_types=['image'],
                                            elem_id=f'support-{k}-image')
                            mask = gr.File(label='Mask file (optional, replaces the painting): '
                                                 'binary, palette or 0/255 PNG',
                                           file_types=['image'], elem_id=f'support-{k}-mask')
                            box = gr.Checkbox(label='Box: the mask is the box around the '
                                                    'paint (drag one stroke corner to corner)',
                                              elem_id=f'support-{k}-box')
                            note = gr.Markdown(elem_id=f'support-{k}-note')
                        editor = gr.ImageEditor(
                            label='Paint the object (brush; the eraser removes paint)',
                            sources=(), type='numpy', format='png', layers=False, transforms=(),
                            brush=brush, scale=2, elem_id=f'support-{k}-editor')

                    def show(image, mask, number=k):
                        return app.show_support(number, image, mask)

                    def painted(image, painting, mask, box, number=k):
                        return app.slot_note(number, SupportSlot(image, painting, mask, box))
                    for source in (image, mask):
                        source.change(show, [image, mask], [editor, note])
                    for source in (editor, box):      # the painted share, as a file mask's
                        source.change(painted, [image, editor, mask, box], note)
                images.append(image)
                masks.append(mask)
                editors.append(editor)
                boxes.append(box)
        queries = gr.File(label='Query images: one or more to segment', file_count='multiple',
                          file_types=['image'], elem_id='queries')
        run = gr.Button('Run', variant='primary', elem_id='run')
        messages = gr.Textbox(label='Messages', interactive=False, lines=2, elem_id='messages')
        gallery = gr.Gallery(label='Each query with its mask outlined (red); the supports '
                                   '(blue) on its right', columns=2, object_fit='contain',
                             format='png', elem_id='results')
        downloads = gr.File(label='Download: the mask of each query (0/255 PNG), and all in a zip',
                            file_count='multiple', interactive=False, elem_id='downloads')

        def segment(checkpoint, *values, progress=gr.Progress()):
            columns = [values[i:i + MAX_SUPPORTS] for i in range(0, 4 * MAX_SUPPORTS, MAX_SUPPORTS)]
            slots = [SupportSlot(*slot) for slot in zip(*columns)]    # image, painting, mask, box
            result = app.run(checkpoint, slots, values[-1], progress)
            return result.messages, result.overlays, result.downloads

        def try_example():
            try:
                support, mask, queries = app.synthetic_example(data_root)
            except (ValueError, OSError) as e:
                return None, None, None, f'error: {e}'
            return support, mask, queries, ('Example loaded: support 1 and its mask, and two '
                                            'queries of the same class. Press Run.')

        run.click(segment, [checkpoint, *images, *editors, *masks, *boxes, queries],
                  [messages, gallery, downloads])
        example.click(try_example, None, [images[0], masks[0], queries, messages])
        rescan.click(lambda: gr.Dropdown(choices=checkpoint_choices(exp_root)), None, checkpoint)
    return page


def main(argv=None):
    args = parse_args(argv)
    if args.exp is not None and not os.path.isdir(args.exp):
        raise FileNotFoundError(f'--exp {args.exp}: no such folder')
    port = free_port(args.port)
    workdir = tempfile.mkdtemp(prefix='sccan-app-')
    try:
        # Gradio keeps uploads and served files in GRADIO_TEMP_DIR, read when it is imported
        os.environ['GRADIO_TEMP_DIR'] = os.path.join(workdir, 'gradio')
        os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
        # Gradio imports matplotlib where it is installed, which writes its config and font
        # cache under HOME unless told otherwise
        os.environ.setdefault('MPLCONFIGDIR', os.path.join(workdir, 'matplotlib'))
        gr = import_gradio()
        page = build_page(gr, SegmentationApp(workdir, args.device),
                          os.path.abspath(args.exp or os.path.join(REPO, 'exp')),
                          os.path.abspath(args.data))
        print(f'SCCAN app on http://{HOST}:{port} (Ctrl-C stops it); temporary files in '
              f'{workdir}, removed when it stops', flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)    # stop as on Ctrl-C
        page.queue().launch(server_name=HOST, server_port=port, ssr_mode=False,
                            run_history=False, footer_links=[], show_error=True, quiet=True,
                            theme=gr.themes.Default(font=['ui-sans-serif', 'system-ui',
                                                          'sans-serif']))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main, (ImportError, 'error', 2)))
