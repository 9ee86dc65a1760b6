"""Typed records at raylm's stage boundaries (issue #26, item 2): what one stage writes and the next
stage, the report and ``raylm runs`` read. Plain pydantic models, no framework: the lowest layer, so
every stage (writer or reader) imports them without an upward edge. See docs/contracts.md."""

from raylm.records.base import Record, RecordError, VersionedRecord, parse_record, read_record
from raylm.records.compress import CompressReport, Measurement, Objectives
from raylm.records.pipeline import PipelineRecord, Stages
from raylm.records.runs import RunSummary
from raylm.records.sweep import SweepResults, SweepRow

__all__ = ["CompressReport", "Measurement", "Objectives", "PipelineRecord", "Record", "RecordError", "RunSummary",
           "Stages", "SweepResults", "SweepRow", "VersionedRecord", "parse_record", "read_record"]
