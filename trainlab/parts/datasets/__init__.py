"""The datasets behind data.py's DATASETS: files on disk (files.py) and generated tasks (synthetic.py)."""
