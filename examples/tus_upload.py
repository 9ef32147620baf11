#!/usr/bin/env python3
"""Upload a file to Carafe with tus (resumable uploads, in chunks), using tuspy.

    pip install tuspy
    CARAFE_URL=http://localhost:8080 CARAFE_KEY=ck_... python3 examples/tus_upload.py report.pdf [bucket]

The file goes up in chunks of CARAFE_CHUNK_BYTES (default 5 MiB), each with a SHA-256
checksum; a failed chunk is retried. When the last chunk is in, Carafe checks and processes
the file like any other upload. Prints JSON: the upload's URL and the id of the file it
became (from the upload's `Carafe-File-Id` header).
"""

import hashlib
import json
import os
import sys
import urllib.request

from tusclient import client
from tusclient.uploader import Uploader


class Sha256Uploader(Uploader):
    # tuspy checksums chunks with sha1 unless told otherwise; Carafe checks sha256.
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: tus_upload.py FILE [BUCKET]")
    base = os.environ.get("CARAFE_URL", "http://localhost:8080").rstrip("/")
    auth = {"Authorization": "Bearer " + os.environ["CARAFE_KEY"]}
    path = sys.argv[1]
    bucket = sys.argv[2] if len(sys.argv) > 2 else "default"
    chunk = int(os.environ.get("CARAFE_CHUNK_BYTES", 5 * 1024 * 1024))

    tus = client.TusClient(base + "/api/v1/uploads", headers=auth)
    uploader = Sha256Uploader(
        file_path=path,
        client=tus,
        chunk_size=chunk,
        metadata={"filename": os.path.basename(path), "bucket": bucket},
        upload_checksum=True,
        retries=3,
        retry_delay=1,
    )
    uploader.upload()

    # Ask the upload what it became.
    req = urllib.request.Request(
        uploader.url, method="HEAD", headers={**auth, "Tus-Resumable": "1.0.0"}
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        file_id = res.headers.get("Carafe-File-Id")
        error = res.headers.get("Carafe-Upload-Error")
    print(json.dumps({"upload": uploader.url, "file_id": file_id, "error": error}))
    return 0 if file_id else 1


if __name__ == "__main__":
    sys.exit(main())
