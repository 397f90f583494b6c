"""Segmenting one's own images, and the pictures of predictions:

    predictor.py        FewShotSegmenter, the Python API: supports and a query in, a mask out
    segment_files.py    image files in, mask files out (predict_sccan.py and the app alike)
    app.py              the browser app's work, without the page (tools/app.py builds it)
    visualize.py        every picture the project draws: masks outlined on images, tiles
"""
