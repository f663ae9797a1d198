"""The one collector client the CLI and the TUI share: credentials from the environment on every
call, failures as errors a person reads (status title, the address that could not be reached), and a
collector without a runs API told apart from one that cannot be reached."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

from cniscope.api.v1 import runs_pb2
from cniscope.client.grpc_collector import CollectorClient, call_metadata, list_nodes, rpc_error
from cniscope.client.run_summary import RunsUnavailable
from cniscope.core.errors import CniscopeError, ConfigError, ConnectionFailed

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402


def test_token_comes_from_the_token_file_else_the_environment(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    assert call_metadata({"CNISCOPE_TOKEN_FILE": str(tok), "CNISCOPE_TOKEN": "other"}) == \
        (("authorization", "Bearer s3cret"),)
    assert call_metadata({"CNISCOPE_TOKEN": "other"}) == (("authorization", "Bearer other"),)
    assert call_metadata({}) == ()
    with pytest.raises(ConfigError, match="cannot read token file"):
        call_metadata({"CNISCOPE_TOKEN_FILE": str(tmp_path / "missing")})


def test_a_failed_call_reads_as_its_status() -> None:
    def err(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    down = rpc_error(err(grpc.StatusCode.UNAVAILABLE, "connection refused"), "10.0.0.1:7400")
    assert isinstance(down, ConnectionFailed)
    assert str(down) == "cannot reach the collector at 10.0.0.1:7400: connection refused"
    slow = rpc_error(err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "c:1")
    assert isinstance(slow, ConnectionFailed)
    refused = rpc_error(err(grpc.StatusCode.FAILED_PRECONDITION, "no agent is connected"), "c:1")
    assert type(refused) is CniscopeError
    assert (refused.title, str(refused)) == ("failed precondition", "no agent is connected")


async def test_token_protected_collector_answers_only_with_the_token(tmp_path: Path) -> None:
    tok, atok = tmp_path / "token", tmp_path / "agent-token"
    tok.write_text("s3cret")
    atok.write_text("agents-s3cret")
    c = await kit.start_collector(tmp_path, token_file=str(tok), agent_token_file=str(atok))
    try:
        async with CollectorClient(kit.address(c), env={"CNISCOPE_TOKEN_FILE": str(tok)}) as client:
            assert await client.list_nodes() == []
            assert await client.stored_runs() == []
            with pytest.raises(CniscopeError, match="no run with id or label") as found:
                await client.get_run("nope")
            assert found.value.title == "not found"
        async with CollectorClient(kit.address(c), env={}) as client:
            with pytest.raises(CniscopeError) as refused:
                await client.list_nodes()
            assert refused.value.title == "unauthenticated"
    finally:
        await c.stop()


async def test_a_server_without_the_runs_api_is_not_an_unreachable_one() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with CollectorClient(f"127.0.0.1:{port}", env={}) as client:
            with pytest.raises(RunsUnavailable, match=f"no runs API on this collector \\(127.0.0.1:{port}\\)"):
                await client.list_runs()
            with pytest.raises(RunsUnavailable):
                async for _ in client.start_run(runs_pb2.StartRunRequest(label="x")):
                    pass
            with pytest.raises(CniscopeError) as other:
                await client.list_nodes()
            assert not isinstance(other.value, RunsUnavailable | ConnectionFailed)
            assert other.value.title == "unimplemented"
    finally:
        await server.stop(0)
    with pytest.raises(ConnectionFailed, match=f"cannot reach the collector at 127.0.0.1:{port}"):
        await list_nodes(f"127.0.0.1:{port}", deadline=5)
