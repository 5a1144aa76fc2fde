"""`python -m trainlab ...` is the `trainlab` command (trainlab/cli.py)."""
from trainlab.cli import main

if __name__ == "__main__":
    main()
