#!/usr/bin/env python3
"""Writes a one-layer container image as a `docker save` archive, without a Docker daemon.

    image-archive.py OUT.tar NAME:TAG ROOTFS_DIR [--entrypoint PATH ARG...] [--user UID:GID]

The layer is ROOTFS_DIR's files (owned by root, mtimes zeroed, so the archive is the same on
every run); `ctr -n k8s.io images import OUT.tar` loads it into containerd. Used by
scripts/install-k8s.sh for the images the local cluster needs (pause, CoreDNS, ...): no image
registry is reachable.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_tar(rootfs: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(directory, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("reference")
    parser.add_argument("rootfs")
    parser.add_argument("--entrypoint", nargs="+", required=True)
    parser.add_argument("--user", default="65532:65532")
    args = parser.parse_args()

    layer = layer_tar(args.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": args.entrypoint, "User": args.user},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "scripts/image-archive.py"}],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [args.reference], "Layers": [layer_name]}]
    ).encode()

    with tarfile.open(args.out + ".partial", mode="w") as out:
        for name, data in ((config_name, config), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    os.replace(args.out + ".partial", args.out)


if __name__ == "__main__":
    main()
