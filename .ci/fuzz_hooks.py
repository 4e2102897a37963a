"""Schemathesis hooks for `.ci/fuzz`.

A few of swrm's rules cannot be said in JSON Schema: a sensor type must be
registered (built in, or the organization's own), a device `ts` must be at
most 5 minutes ahead and 30 days back, `from` must come before `to` (and a
bucketed window hold at most 10,000 buckets), `min` must not exceed `max`,
an alert rule's `clear_threshold` sits on the far side of its `threshold`,
and it has at most one scope, an enrollment code's `serial_pattern` is a
regular expression, a capture's `image` must be a JPEG, PNG or WebP
(checked by content, else 415), its `meta` part a JSON object, a model's
text parts printable, a deployment has exactly one target, and a
detection's bbox must lie inside the image (`x_min < x_max <= width`...).
The server answers 400 (415) for each, naming the field, and the document
says so in the descriptions.

So that the fuzzer still holds the server to accepting *every* schema-valid
request, the schema-valid (positive) cases are nudged to satisfy those rules
here. Negative cases are left exactly as generated.
"""

import datetime
import os
import uuid

import schemathesis

REGISTERED = ["temperature", "humidity", "pressure", "co2", "light", "battery"]


def _now(offset_seconds=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return t.isoformat()


def _fix_ts(obj):
    if isinstance(obj, dict) and obj.get("ts") is not None:
        obj["ts"] = _now(-60)


def _registered(values):
    return [REGISTERED[i % len(REGISTERED)] for i in range(len(values))]


def _parse(value):
    try:
        return datetime.datetime.fromisoformat(str(value).replace("z", "Z"))
    except ValueError:
        return None


def _fix_window(query, bucketed):
    if bucketed and query.get("bucket_seconds") is not None:
        # The default window (a day) holds every bucket width from 60 s.
        query.pop("from", None)
        query.pop("to", None)
        query["bucket_seconds"] = max(int(query["bucket_seconds"]), 60)
        return
    start, end = query.get("from"), query.get("to")
    if start is None and end is None:
        if bucketed and query.get("bucket_seconds") is not None:
            query["bucket_seconds"] = max(int(query["bucket_seconds"]), 60)
        return
    parsed = [_parse(v) for v in (start, end) if v is not None]
    if any(p is None for p in parsed):
        query.pop("from", None)
        query.pop("to", None)
        return
    if start is not None and end is not None:
        a, b = _parse(start), _parse(end)
        if a >= b:
            query["from"], query["to"] = end, start
            a, b = b, a
        if a == b:
            query.pop("from", None)
        elif bucketed and query.get("bucket_seconds") is not None:
            span = (b - a).total_seconds()
            if span / int(query["bucket_seconds"]) > 10_000:
                query.pop("from", None)
                query.pop("to", None)
    if bucketed and query.get("bucket_seconds") is not None and "from" not in query:
        query["bucket_seconds"] = max(int(query["bucket_seconds"]), 60)


# A 1×1 PNG (signature and IHDR are what swrm reads).
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


def _fix_detections(detections):
    for d in detections or []:
        if isinstance(d, dict) and isinstance(d.get("bbox"), list):
            # Inside any image, however small.
            d["bbox"] = [0, 0, 1, 1]


def _fix_capture_form(body):
    for extra in [k for k in body if k not in ("image", "meta")]:
        # Extra parts are ignored, but generated part names may hold
        # control characters no multipart parser reads.
        body.pop(extra)
    body["image"] = PNG_1X1
    if "meta" in body:
        body["meta"] = '{"detections":[{"label":"a","confidence":0.5,"bbox":[0,0,1,1]}],"tags":["fuzz"]}'


def _fix_model_form(body):
    for extra in [k for k in body if k not in ("file", "name", "version", "format")]:
        body.pop(extra)
    body["file"] = b"model bytes"
    # Printable and not blank; a repeated name and version is a 409.
    for field in ("name", "version", "format"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            body[field] = "fuzz"
        else:
            body[field] = value[:32]


def _one_target(body):
    targets = [k for k in ("device_ids", "group_id", "location_id", "all_devices") if body.get(k)]
    for extra in targets[1:]:
        body.pop(extra)
    if not targets:
        body["all_devices"] = True


def _no_wait(wait):
    if isinstance(wait, list):
        return [_no_wait(w) for w in wait]
    if isinstance(wait, bool):
        return wait
    try:
        seconds = int(str(wait).strip())
    except ValueError:
        return wait
    return 0 if 0 <= seconds <= 60 else wait


@schemathesis.hook
def map_case(context, case):
    if case.operation.label == "GET /api/public/v1/commands":
        # Without `wait` a poll holds for 25 s: ask for an answer at once
        # (a generated invalid `wait` is left as it is).
        if case.query is None:
            case.query = {}
        if isinstance(case.query, dict):
            # A wait the server would honour (an integer 1..60, however it is
            # spelled, alone or repeated) becomes 0; anything else is left
            # as generated, so an invalid wait stays invalid.
            case.query["wait"] = _no_wait(case.query.get("wait", 0))
    _nudge(case)
    return case


@schemathesis.hook
def before_call(context, case, **kwargs):
    # Stateful runs fill in ids from earlier answers (links) after
    # `map_case`: nudge again just before sending.
    _nudge(case)
    _spare_own_key(case)


def _spare_own_key(case):
    """The run's own owner key is never deleted: another id (a 404) instead."""
    own = os.environ.get("SWRM_FUZZ_OWNER_KEY_ID")
    params = case.path_parameters
    if (
        own
        and case.operation.label == "DELETE /api/v1/api-keys/{id}"
        and isinstance(params, dict)
        and params.get("id") == own
    ):
        params["id"] = str(uuid.uuid4())


def _nudge(case):
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return
    label = case.operation.label
    body = case.body if isinstance(case.body, dict) else None
    query = case.query if isinstance(case.query, dict) else None
    if label == "POST /api/public/v1/sensors" and body is not None:
        readings = body.get("readings") or []
        for reading, key in zip(readings, _registered(readings)):
            if isinstance(reading, dict):
                reading["sensor_type"] = key
                reading.pop("unit", None)
                _fix_ts(reading)
    elif label == "POST /api/public/v1/telemetry" and body is not None:
        _fix_ts(body)
    elif label == "POST /api/public/v1/events" and body is not None:
        events = body.get("events") if "events" in body else [body]
        for event in events or []:
            _fix_ts(event)
    elif label == "POST /api/v1/alert-rules" and body is not None:
        body["sensor_type"] = REGISTERED[0]
        if body.get("clear_threshold") is not None and body.get("threshold") is not None:
            body["clear_threshold"] = body["threshold"]
        scopes = [k for k in ("device_id", "group_id", "location_id") if body.get(k)]
        for extra in scopes[1:]:
            body.pop(extra)
    elif label == "POST /api/v1/sensor-types" and body is not None:
        low, high = body.get("min"), body.get("max")
        if low is not None and high is not None and low > high:
            body["min"], body["max"] = high, low
    elif label in ("PATCH /api/v1/groups/{id}", "PATCH /api/v1/devices/{id}") and body is not None:
        if isinstance(body.get("sensor_keys"), list):
            body["sensor_keys"] = _registered(body["sensor_keys"])
    elif label == "GET /api/v1/devices/{id}/readings" and query is not None:
        _fix_window(query, bucketed=True)
    elif label in (
        "GET /api/v1/devices/{id}/telemetry",
        "GET /api/v1/captures",
        "GET /api/v1/captures/export/coco",
    ) and query is not None:
        _fix_window(query, bucketed=False)
    elif label == "POST /api/public/v1/captures" and body is not None:
        _fix_capture_form(body)
    elif label == "POST /api/v1/models" and body is not None:
        _fix_model_form(body)
    elif label == "POST /api/v1/deployments" and body is not None:
        _one_target(body)
    elif label == "POST /api/v1/enrollment-codes" and body is not None:
        if body.get("serial_pattern"):
            body["serial_pattern"] = "[A-Za-z0-9-]+"
    elif label == "POST /api/public/v1/labels" and body is not None:
        _fix_detections(body.get("detections"))
