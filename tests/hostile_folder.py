"""A folder of photos with what a careless or hostile operator leaves in one: a FIFO, a
character device, a link to a file outside the folder and link loops, each named .jpg."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from demo.sample_images import product_image

# Entry -> the reason the folder readers give for skipping it (the device only where the
# test may create device nodes).
SKIPPED = {
    "fifo.jpg": "not a regular file (a FIFO)",
    "device.jpg": "not a regular file (a character device)",
    "outside.jpg": "symbolic link to a file outside the folder",
    "loop.jpg": "symbolic link loop",
    "ping.jpg": "symbolic link loop",
    "pong.jpg": "symbolic link loop",
}


def hostile_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(folder, expected skips): one good photo, one good link inside, and SKIPPED's entries."""
    root = tmp_path / "photos"
    root.mkdir()
    product_image(1, size=64).save(root / "good.jpg", "JPEG")
    os.symlink("good.jpg", root / "alias.jpg")  # a link inside the folder is a photo
    secret = tmp_path / "secret.jpg"
    product_image(2, size=64).save(secret, "JPEG")
    os.symlink(secret, root / "outside.jpg")
    os.mkfifo(root / "fifo.jpg")
    os.symlink("loop.jpg", root / "loop.jpg")
    os.symlink("pong.jpg", root / "ping.jpg")
    os.symlink("ping.jpg", root / "pong.jpg")
    os.symlink("..", root / "up")  # a directory link back up: never descended
    expected = dict(SKIPPED)
    try:
        os.mknod(root / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        del expected["device.jpg"]
    return root, expected
