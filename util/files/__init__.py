"""Files read and written, and the rules that keep outputs from harming inputs:

    writer.py       write_atomic, the one writer of the project (and the folder and room checks)
    checks.py       no output over an input, none over an existing file unless asked
    run_lock.py     one training run at a time per run: the lock file and its holder
    inputs.py       text files read whole, with errors that name the file
    image_io.py     images and label maps, read and written
    run_paths.py    every file name of a training run
    weights.py      the authors' downloads: found, checked, put in place
"""
