"""How a deployed call becomes an HTTP request, checked before anything is sent."""

from __future__ import annotations

import json

import pytest

from runpod_flash.stubs.http_route import EndpointHTTPError, _raise_for, build_request


class Missing(Exception):
    """Stands for a user exception class defined in the caller's module."""


def process_data(x: int, y: int) -> dict[str, int]:
    return {"result": x + y}


def get_user(user_id: int, verbose: bool = False, tags: list[str] | None = None) -> None:
    return None


def update_user(user_id: int, name: str | None = None, email: str | None = None) -> None:
    return None


def test_post_sends_named_json_body_from_positional_args() -> None:
    target, body = build_request(process_data, "POST", "/api/process", (5, 3), {})
    assert target == "/api/process"
    assert json.loads(body or b"") == {"x": 5, "y": 3}


def test_path_parameters_are_substituted_and_left_out_of_the_body() -> None:
    target, body = build_request(update_user, "PUT", "/users/{user_id}", (7,), {"name": "Z"})
    assert target == "/users/7"
    assert json.loads(body or b"") == {"name": "Z"}


def test_typed_placeholder_and_escaping() -> None:
    target, _ = build_request(update_user, "PUT", "/users/{user_id:int}", ("a/b",), {})
    assert target == "/users/a%2Fb"


def test_get_sends_the_rest_as_query_parameters() -> None:
    target, body = build_request(
        get_user, "GET", "/users/{user_id}", (5,), {"verbose": True, "tags": ["a"]}
    )
    assert body is None
    assert target == "/users/5?verbose=true&tags=%5B%22a%22%5D"


def test_non_json_argument_is_a_type_error_before_sending() -> None:
    with pytest.raises(TypeError, match=r"Argument 'x' of process_data\(\) is a set"):
        build_request(process_data, "POST", "/api/process", ({1}, 2), {})


def test_wrong_arguments_are_the_usual_type_error() -> None:
    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        build_request(process_data, "POST", "/api/process", (1,), {})


def test_remote_error_type_from_the_callers_module_is_rebuilt() -> None:
    body = json.dumps({"error": "User 9 not found", "error_type": "Missing"}).encode()
    Missing.__module__ = __name__
    with pytest.raises(Missing, match="User 9 not found"):
        _raise_for(get_user, "user-service", 500, body)


def test_builtin_error_type_is_rebuilt() -> None:
    body = json.dumps({"error": "bad", "error_type": "ValueError"}).encode()
    with pytest.raises(ValueError, match="bad"):
        _raise_for(get_user, "user-service", 500, body)


def test_unknown_error_becomes_http_error_with_status_and_body() -> None:
    with pytest.raises(EndpointHTTPError, match="HTTP error from endpoint svc: 422 - ") as raised:
        _raise_for(get_user, "svc", 422, b'{"detail": []}')
    assert raised.value.status == 422
