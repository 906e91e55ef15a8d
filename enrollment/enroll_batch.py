#!/usr/bin/env python
"""Operator script: batch-enrol users into a gallery (thin wrapper over ``smile2pay enroll-batch``).

    # one sub-folder per user (files named smile*.jpg get kind "smile", others "neutral")
    python enrollment/enroll_batch.py --gallery /srv/gallery --folder /data/enrol/ --report report.json
    # CSV manifest with a header: user_id,image_path,kind   (relative paths: relative to the CSV)
    python enrollment/enroll_batch.py --gallery /srv/gallery --manifest users.csv --workers 2 --json

Re-running skips users already enrolled (resumable). The key comes from SMILE2PAY_GALLERY_KEY,
SMILE2PAY_GALLERY_KEY_FILE or --key-file. Progress with ETA on stderr; the JSON summary (enrolled,
rejected with reasons, duplicates) on stdout and in --report. Exit 0 ok, 1 some users errored, 2 bad input.
"""
import sys

from smile2pay.cli import main

if __name__ == "__main__":
    sys.exit(main(["enroll-batch", *sys.argv[1:]]))
