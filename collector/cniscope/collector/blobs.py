"""How raw samples are stored: one blob per batch, the batch's own protobuf encoding.

A row per sample made SQLite most of the collector's cost per batch; one blob per batch keeps ingest
to one insert, and the readers (retention, time-window queries) decode what they need.
"""

from __future__ import annotations

from collections.abc import Sequence

from cniscope.api.v1 import agent_pb2, common_pb2


def encode_samples(batch: agent_pb2.Batch) -> bytes | None:
    """The batch's own encoding (samples, boot id, seq, time) without its probe results and events,
    which have tables of their own. Serialising the batch as it is costs a tenth of copying its
    samples into a new message, so the copy is made only when there is something to leave out."""
    if not batch.samples:
        return None
    if not batch.probe_results and not batch.events:
        return batch.SerializeToString()
    only = agent_pb2.Batch()
    only.CopyFrom(batch)
    del only.probe_results[:]
    del only.events[:]
    return only.SerializeToString()


def decode_samples(blob: bytes | None) -> Sequence[common_pb2.Sample]:
    """The samples of a stored batch, each with its time (a sample without one takes the batch's)."""
    if not blob:
        return ()
    b = agent_pb2.Batch.FromString(blob)
    if b.time_unix_nano:
        for smp in b.samples:
            if not smp.time_unix_nano:
                smp.time_unix_nano = b.time_unix_nano
    return b.samples
