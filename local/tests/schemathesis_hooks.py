"""Schemathesis hooks for `contract.rs`: the three rules of FTGO's API that JSON Schema cannot state.

Both are written in the OpenAPI document's descriptions and in docs/api.md, and the gateway answers
400 for breaking them. Only *positive* cases that break them are dropped (schemathesis would expect
them accepted); nothing is dropped from negative cases, and no check is switched off or widened.

- A restaurant's menu item ids are unique within the menu, compared once trimmed (`uniqueItems`
  compares whole items, not one property of them).
- `timeout` of `GET /api/orders/{orderId}` is only allowed together with `wait` (OpenAPI cannot
  make one query parameter depend on another).
- An `Idempotency-Key` names one request: the same key with another request is 422 (a rule across
  requests). A positive case's key is made unique before it is sent, as a client makes each new
  command's key; negative cases keep the keys they were given.
"""

import itertools

import schemathesis


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


# What Rust's `str::trim` removes (Unicode White_Space): the Kitchen Service compares ids trimmed.
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def _duplicate_menu_ids(body):
    if not isinstance(body, dict) or not isinstance(body.get("menu"), dict):
        return False
    items = body["menu"].get("menuItems")
    if not isinstance(items, list):
        return False
    ids = [item["id"].strip(_WHITE_SPACE) for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
    return len(ids) != len(set(ids))


def _timeout_without_wait(query):
    return isinstance(query, dict) and "timeout" in query and "wait" not in query


@schemathesis.hook
def filter_case(context, case):
    if not _positive(case):
        return True
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    if operation == "POST /api/restaurants" and _duplicate_menu_ids(case.body):
        return False
    if operation == "GET /api/orders/{orderId}" and _timeout_without_wait(case.query):
        return False
    return True


_KEYS = itertools.count(1)


@schemathesis.hook
def before_call(context, case, kwargs):
    if _positive(case) and case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"schemathesis-{next(_KEYS)}"
