#!/usr/bin/env python
"""Operator helper: write a ``user_id,image_path,kind`` manifest from a folder (one sub-folder per user),
to review or edit before ``enroll_batch.py --manifest``.

    python enrollment/make_manifest.py /data/enrol/ > users.csv
"""
import csv
import sys

from smile2pay.gallery.batch import plan_folder

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    w = csv.writer(sys.stdout)
    w.writerow(["user_id", "image_path", "kind"])
    for t in plan_folder(sys.argv[1]):
        for path, kind in t.images:
            w.writerow([t.user_id, path, kind])
