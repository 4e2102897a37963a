#!/usr/bin/env python3
"""swrm device client example: the Python snippet of the public docs, runnable.

Sends, exactly as the documented snippet does:
  POST /api/public/v1/heartbeat  (JSON)
  POST /api/public/v1/sensors    (JSON)
  POST /api/public/v1/captures   (multipart: image frame.jpg + meta)
and prints each route, the HTTP status and the JSON answer.

Environment:
  SWRM_API         base URL of the server (default http://127.0.0.1:8080)
  SWRM_TOKEN       device key, swrm_dk_...; when unset the key is read from
  SWRM_TOKEN_FILE  (default /etc/swrm/token, as written by pair.sh)

frame.jpg is read from the current directory; when it does not exist a
320x240 JPEG is written there first (with Pillow when installed, otherwise
from a built-in image), since the detection's bbox [10,20,120,240] must fit
inside the image.

Exit status: 1 when the heartbeat fails (or no key is available); 1 when
another call fails, except that 501 answers are reported and tolerated,
since some routes are not implemented in this release; 0 otherwise.

    pip install -r requirements.txt
    SWRM_API=http://127.0.0.1:8080 python3 client.py
"""

import base64
import json
import os
import sys

import requests

API = os.environ.get("SWRM_API", "http://127.0.0.1:8080").rstrip("/")
TIMEOUT = 30  # seconds; not in the docs snippet, but a real client wants one
FRAME = "frame.jpg"

# A valid baseline JPEG, 320x240, gray with a blue box over the example bbox.
FRAME_JPEG_B64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikx"
    "MC4pLSwzOko+MzZGNywtQFdBRkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01"
    "T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//wAAR"
    "CADwAUADASIAAhEBAxEB/8QAFwABAQEBAAAAAAAAAAAAAAAAAAUEA//EACIQAQABBAMAAgMB"
    "AAAAAAAAAAACBDSBsRRjogMRARITQf/EABcBAQEBAQAAAAAAAAAAAAAAAAADBAL/xAAhEQEA"
    "AQMFAQEBAQAAAAAAAAAAAwEEQQITMTJxURESIf/aAAwDAQACEQMRAD8AAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAM3zVf8vl/MP0+/r/AH7aU2ruZ40tBopr1flXEla0p/jtzur0"
    "c7q9MY17EfxHc1NnO6vRzur0xhsR/Dc1NnO6vRzur0xhsR/Dc1NnO6vRzur0xhsR/Dc1NnO6"
    "vRzur0xhsR/Dc1NnO6vRzur0xhsR/Dc1NnO6vTYjrDPcR6dH5/Kkeqtf39AGZUAAAAAAAAAA"
    "AAAAAAAAAAAATau5njSkm1dzPGmm1718Sl4cQG5AAAAAAAAAAAWEdYY7rC0WQBkWAAAAAAAA"
    "AAAAAAAAAAAAAAE2ruZ40pJtXczxppte9fEpeHEBuQAAAAAAAAAAFhHWGO6wtFkAZFgAAAAA"
    "AAAAAAAAAAAAAAAABNq7meNKSbV3M8aabXvXxKXhxAbkAAAAAAAAAABYR1hjusLRZAGRYAAA"
    "AAAAAAAAAAAAAAAAAAATau5njSkm1dzPGmm1718Sl4cQG5AAAAAAAAAAAWEdYY7rC0WQBkWA"
    "AAAAAAAAAAAAAAAAAAAAAE2ruZ40pJtXczxppte9fEpeHEBuQAAAAAAAAAAFhHWGO6wtFkAZ"
    "FgAAAAAAAAAAAAAAAAAAAAABNq7meNKSbV3M8aabXvXxKXhxAbkAAAAAAAAAABYR1hjusLRZ"
    "AGRYAAAAAAAAAAAAAAAAAAAAAATau5njSkm1dzPGmm1718Sl4cQG5AAAAAAAAAAAWEdYY7rC"
    "0WQBkWAAAAAAAAAAAAAAAAAAAAAAE2ruZ40pJtXczxppte9fEpeHEBuQAAAAAAAAAAFhHWGO"
    "6wtFkAZFgAAAAAAAAAAAAAAAAAAAAABNq7meNKSbV3M8aabXvXxKXhxAbkAAAAAAAAAABYR1"
    "hjusLRZAGRYAAAAAAAAAAAAAAAAAAAAAATau5njSkm1dzPGmm1718Sl4cQG5AAAAAAAAAAAW"
    "EdYY7rC0WQBkWAAAAAAAAAAAAAAAAAAAAAAE2ruZ40pJtXczxppte9fEpeHEBuQAAAAAAAAA"
    "AFhHWGO6wtFkAZFgAAAAAAAAAAAAAAAAAAAAABNq7meNKSbV3M8aabXvXxKXhxAbkAAAAAAA"
    "AAABYR1hjusLRZAGRYAAAAAAAAAAAAAAAAAAAAAATau5njSkm1dzPGmm1718Sl4cQG5AAAAA"
    "AAAAAAWEdYY7rC0WQBkWAAAAAAAAAAAAAAAAAAAAAAf/2Q=="
)


def read_token():
    """SWRM_TOKEN, else the key file written by pair.sh."""
    token = os.environ.get("SWRM_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("SWRM_TOKEN_FILE") or "/etc/swrm/token"
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        sys.exit(
            f"error: SWRM_TOKEN is not set and the key file {path} cannot be read "
            f"({e.strerror}); pair the device with pair.sh or set SWRM_TOKEN=swrm_dk_..."
        )
    if not token:
        sys.exit(f"error: the key file {path} is empty; pair the device again with pair.sh")
    return token


def ensure_frame(path=FRAME):
    """Write a 320x240 JPEG to path unless the file already exists."""
    if os.path.exists(path):
        return
    try:
        from PIL import Image, ImageDraw  # optional

        im = Image.new("RGB", (320, 240), (128, 128, 128))
        ImageDraw.Draw(im).rectangle([10, 20, 119, 239], fill=(60, 90, 160))
        im.save(path, "JPEG", quality=85)
        how = "Pillow"
    except ImportError:
        with open(path, "wb") as f:
            f.write(base64.b64decode(FRAME_JPEG_B64))
        how = "built-in image"
    print(f"wrote {path} (320x240 JPEG, {how})")


failures = []
not_implemented = []


def show(route, call):
    """Run call(), print route, status and JSON answer; return the response or None."""
    print(f"POST {route}")
    try:
        r = call()
    except requests.RequestException as e:
        print(f"  request failed: {e}")
        failures.append(route)
        return None
    try:
        body = json.dumps(r.json(), indent=2)
    except ValueError:
        body = r.text or "(empty body)"
    print(f"  HTTP {r.status_code}")
    print("  " + body.replace("\n", "\n  "))
    if r.status_code == 501:
        print("  note: 501 Not Implemented: this route is not implemented in this release")
        not_implemented.append(route)
    elif not r.ok:
        failures.append(route)
        if r.status_code == 401:
            print("  hint: the device key is unknown or revoked; pair again or rotate the key")
    return r


TOKEN = read_token()  # swrm_dk_...
if not TOKEN.startswith("swrm_dk_"):
    print("warning: the device key does not start with swrm_dk_", file=sys.stderr)
H = {"Authorization": f"Bearer {TOKEN}"}

# --- the documented snippet, call for call -----------------------------------

hb = show("/api/public/v1/heartbeat", lambda: requests.post(
    f"{API}/api/public/v1/heartbeat", headers=H,
    json={"firmware_version": "1.0.0", "uptime_seconds": 42}, timeout=TIMEOUT))
if hb is None or not hb.ok:
    print("heartbeat failed", file=sys.stderr)
    sys.exit(1)

show("/api/public/v1/sensors", lambda: requests.post(
    f"{API}/api/public/v1/sensors", headers=H,
    json={"readings": [{"sensor_type": "temperature", "value": 23.4, "unit": "C"}]},
    timeout=TIMEOUT))

ensure_frame()
with open(FRAME, "rb") as f:
    show("/api/public/v1/captures", lambda: requests.post(
        f"{API}/api/public/v1/captures", headers=H,
        files={"image": ("frame.jpg", f, "image/jpeg")},
        data={"meta": '{"detections":[{"label":"person","confidence":0.92,"bbox":[10,20,120,240]}]}'},
        timeout=TIMEOUT))

if failures:
    print("failed: " + ", ".join(failures), file=sys.stderr)
    sys.exit(1)
if not_implemented:
    print("ok (not implemented in this release: " + ", ".join(not_implemented) + ")")
else:
    print("ok")
