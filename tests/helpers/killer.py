"""`python tests/helpers/killer.py OVERRIDES...`: the trainlab command, SIGKILLed at a chosen point (a real death:
no finally block, no flush). KILL_AT=N: as step N begins; KILL_CKPT=N: halfway through writing checkpoint step N."""
import os
import signal
import sys
import tempfile

import trainlab.runs.files as files
import trainlab.train as train

KILL_AT, KILL_CKPT = int(os.environ.get("KILL_AT", "-1")), int(os.environ.get("KILL_CKPT", "-1"))
batch_at, write_atomic = train.batch_at, files.write_atomic


def dying_batch_at(step, *args, **kwargs):
    if step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return batch_at(step, *args, **kwargs)


def dying_write(path, data):
    if path.name == f"step-{KILL_CKPT:08d}.pt":  # the temp file half written, never renamed
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return write_atomic(path, data)


train.batch_at, files.write_atomic = dying_batch_at, dying_write
if __name__ == "__main__":
    from trainlab.cli import main

    sys.argv = ["trainlab", *sys.argv[1:]]
    main()
