"""One error hierarchy. Every error has a short title; the CLI prints ``title: message`` to stderr
and exits non-zero, the TUI shows it as a notification, gRPC boundaries map it to a status code."""

from __future__ import annotations


class CniscopeError(Exception):
    """Base of every error cniscope raises on purpose."""

    title = "cniscope error"
    exit_code = 1
    grpc_status = "INTERNAL"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message


class ConfigError(CniscopeError):
    title = "configuration error"
    exit_code = 2
    grpc_status = "INVALID_ARGUMENT"


class ValidationError(CniscopeError):
    """A request or parameter outside its declared bounds; refused before any packet leaves."""

    title = "invalid request"
    exit_code = 2
    grpc_status = "INVALID_ARGUMENT"


class ForbiddenTarget(ValidationError):
    title = "target refused"
    grpc_status = "PERMISSION_DENIED"


class ParseError(CniscopeError):
    """A tool's output could not be parsed. Never turned into a zeroed result."""

    title = "parse error"


class ToolMissing(CniscopeError):
    title = "missing tool"
    exit_code = 3
    grpc_status = "FAILED_PRECONDITION"


class Unavailable(CniscopeError):
    """Does not apply here (no cilium-agent, no bcc, ...). Reported, not a failure."""

    title = "unavailable"
    grpc_status = "UNAVAILABLE"


class ProbeFailed(CniscopeError):
    title = "probe failed"


class NotFound(CniscopeError):
    title = "not found"
    exit_code = 4
    grpc_status = "NOT_FOUND"


class LabError(CniscopeError):
    title = "lab error"


class StoreError(CniscopeError):
    title = "store error"


class ConnectionFailed(CniscopeError):
    title = "connection failed"
    exit_code = 5
    grpc_status = "UNAVAILABLE"
