"""`python -m trainlab ...` is the `trainlab` command (trainlab/cli.py)."""
from trainlab.cli import entry

if __name__ == "__main__":
    entry()
