"""The API client's retry timing: Retry-After when the gateway gives one, else jittered backoff."""

from __future__ import annotations

from unittest.mock import Mock

from shared.gateway import RetryPolicy, _description, _retry_after, _Retryable, _wait


def state(error: Exception, attempt: int = 1) -> Mock:
    outcome = Mock()
    outcome.exception.return_value = error
    return Mock(outcome=outcome, attempt_number=attempt)


def test_retry_after_is_honoured_and_capped() -> None:
    wait = _wait(RetryPolicy(max_wait_s=2.0))
    assert wait(state(_Retryable("429", 1.5))) == 1.5
    assert wait(state(_Retryable("503", 600.0))) == 8.0  # never longer than 4 x max_wait_s


def test_backoff_is_bounded_when_no_retry_after() -> None:
    wait = _wait(RetryPolicy(base_s=0.2, max_wait_s=1.0))
    for attempt in range(1, 10):
        assert 0 <= wait(state(_Retryable("timeout"), attempt)) <= 1.0


def test_header_and_description_parsing() -> None:
    assert _retry_after("3") == 3.0 and _retry_after("-1") == 0.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None and _retry_after(None) is None
    assert _description({"status": {"status_description": "bad amount"}}) == "bad amount"
    assert _description({"status_description": "no"}) == "no" and _description("x") is None
