"""The verdict: for each trace, which allocator wins on utilization, admitted concurrency,
throughput and TTFT p99, and why, as sentences computed from the runs' numbers."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from reports.load import NO_FACTS, AllocatorFacts, Run, time_weighted_mean
from reports.units import count, is_number, pct, seconds

# The noise margin: runs within this relative distance of the best value share the win. A
# slice of a few hundred requests moves a p99 by several percent when a handful of requests
# change places, so closer than this is the slice, not the allocator.
TIE_RELATIVE = 0.05
TIE_UTILIZATION = 0.02  # absolute share of backed memory (two percentage points)

SHORT_WASTE = {"reserved": "reserved-not-written", "internal": "internal slack",
               "external": "free but fragmented", "cached": "prefix cache", "free": "sat free"}
WASTE_PHRASES = {
    "reserved": "{share} of its backed memory is reserved-not-written (held up front for tokens "
                "not generated yet)",
    "internal": "{share} of its backed memory is internal slack (allocated, never written: "
                "block tails or reservation past the final length)",
    "external": "{share} of its backed memory is free but fragmented (no contiguous run long "
                "enough for one request)",
    "cached": "{share} of its backed memory holds evictable prefix-cache entries",
    "stale": "{share} of its backed memory holds tokens its sliding window has passed (never "
             "read again, not yet let go)",
    "free": "{share} of its backed memory sat free (backed, but the load did not fill it)",
}


@dataclass(frozen=True)
class Finding:
    metric: str  # "utilization", "admitted concurrency", "throughput", "TTFT p99"
    winners: tuple[str, ...]  # labels; more than one on a tie
    value: str  # the winning figure, formatted
    why: tuple[str, ...]  # sentences: the winner's figure, then what held each other run back


@dataclass(frozen=True)
class TraceVerdict:
    trace: str
    labels: tuple[str, ...]  # the runs compared (those with requests)
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]  # runs that could not compete (empty, all rejected, one request)

    def winners_text(self, finding: Finding) -> str:
        """'paged', 'paged and hybrid (tie)' or 'all 4 tie'."""
        if len(finding.winners) == len(self.labels) > 1:
            return f"all {len(self.labels)} tie"
        if len(finding.winners) == 1:
            return finding.winners[0]
        return f"{', '.join(finding.winners[:-1])} and {finding.winners[-1]} (tie)"


@dataclass(frozen=True)
class _Entry:
    label: str
    run: Run

    def get(self, key: str) -> float:
        return self.run.figure(key)


def run_notes(label: str, run: Run) -> list[str]:
    """Plain statements about a run whose numbers a reader should not over-read."""
    counts = run.status_counts()
    total = run.num_requests
    if total == 0:
        return [f"{label}: empty run (the trace slice had no requests); nothing to measure."]
    rejected = counts.get("rejected", 0)
    if rejected == total:
        reasons = run.requests["reason"].replace("", "no reason given").value_counts()
        return [f"{label}: all {total} requests were rejected (most common reason: "
                f"{reasons.index[0]}); no latency or throughput to compare."]
    notes = []
    if total == 1:
        notes.append(f"{label}: only one request; its distributions are a single point.")
    if rejected:
        notes.append(f"{label}: {rejected} of {total} requests rejected.")
    unfinished = counts.get("queued", 0) + counts.get("running", 0)
    if unfinished:
        notes.append(f"{label}: {unfinished} requests still queued or running at the end.")
    return notes


def _best(entries: list[_Entry], key: str, higher: bool, tie_abs: float = 0.0) -> list[_Entry]:
    valued = [e for e in entries if is_number(e.get(key))]
    if not valued:
        return []
    best = (max if higher else min)(e.get(key) for e in valued)
    tolerance = max(tie_abs, abs(best) * TIE_RELATIVE)
    return [e for e in valued if abs(e.get(key) - best) <= tolerance]


def _largest_waste(run: Run) -> tuple[str, float]:
    shares = run.waste_shares()
    key = max(WASTE_PHRASES, key=lambda k: shares[k] if is_number(shares[k]) else -1.0)
    return key, shares[key]


def _utilization(entries: list[_Entry], facts: AllocatorFacts) -> Finding | None:
    winners = _best(entries, "utilization_mean", higher=True, tie_abs=TIE_UTILIZATION)
    if not winners:
        return None
    lead = winners[0]
    parts = [f"{lead.label} keeps {pct(lead.get('utilization_mean'))} of its backed memory in "
             "live token state (time-weighted mean)."]
    if lead.get("utilization_mean") < 0.9:
        key, share = _largest_waste(lead.run)
        parts[0] = parts[0][:-1] + "; even so, " + WASTE_PHRASES[key].format(share=pct(share)) + "."
    for entry in entries:
        if entry in winners or not is_number(entry.get("utilization_mean")):
            continue
        key, share = _largest_waste(entry.run)
        phrase = WASTE_PHRASES[key].format(share=pct(share))
        fixed = facts.reservations.get(entry.run.allocator)
        if key in ("reserved", "internal") and fixed:
            what = ("prompt + actual output (an oracle)" if facts.is_oracle(entry.run)
                    else fixed)
            phrase = f"reserves {what} up front: {phrase}"
        parts.append(f"{entry.label} ({pct(entry.get('utilization_mean'))}): {phrase}.")
    return Finding("utilization", tuple(w.label for w in winners),
                   pct(lead.get("utilization_mean")), tuple(parts))


def _concurrency(entries: list[_Entry]) -> Finding | None:
    winners = _best(entries, "mean_running", higher=True)
    if not winners:
        return None
    lead = winners[0]
    value = f"{lead.get('mean_running'):.1f} running (peak {count(lead.get('peak_running'))})"
    others = [e for e in entries if e not in winners and is_number(e.get("mean_running"))]
    if not others:
        why = ["Every allocator admitted the same number of sequences: the load never made "
               "memory the limit."]
    else:
        parts = [f"{lead.label} fits {lead.get('mean_running'):.1f} sequences at once on "
                 f"average in the same budget (utilization {pct(lead.get('utilization_mean'))})."]
        for entry in others:
            key, share = _largest_waste(entry.run)
            text = (f"{entry.label}: {entry.get('mean_running'):.1f} "
                    f"(utilization {pct(entry.get('utilization_mean'))}, "
                    f"{pct(share)} {SHORT_WASTE[key]}")
            if entry.get("rejected") > 0:
                text += f", {count(entry.get('rejected'))} rejected"
            parts.append(text + ").")
        why = parts
    cap = (lead.run.config.get("scheduler") or {}).get("max_num_seqs")
    if is_number(cap) and lead.get("peak_running") >= cap:
        why.append(f"The winner hit the scheduler cap max_num_seqs = {cap}, not a memory limit.")
    return Finding("admitted concurrency", tuple(w.label for w in winners), value, tuple(why))


def _throughput(entries: list[_Entry]) -> Finding | None:
    winners = _best(entries, "throughput_tok_s", higher=True)
    if not winners:
        return None
    lead = winners[0]
    value = f"{count(lead.get('throughput_tok_s'))} tok/s"
    others = [e for e in entries if e not in winners and is_number(e.get("throughput_tok_s"))]
    if not others:
        return Finding("throughput", tuple(w.label for w in winners), value,
                       (f"All within {pct(TIE_RELATIVE)}: the trace's arrival rate, not KV "
                        "memory, set the pace of output tokens.",))
    parts = _prefix_reuse(lead, others)
    for entry in others:
        text = f"{entry.label}: {count(entry.get('throughput_tok_s'))} tok/s"
        if entry.get("mean_running") < lead.get("mean_running"):
            text += (f", with {entry.get('mean_running'):.1f} running sequences against "
                     f"{lead.get('mean_running'):.1f} each decode step carries a smaller batch")
        elif is_number(entry.get("mean_step_ms")):
            text += (f", its steps take {entry.get('mean_step_ms'):.1f} ms against "
                     f"{lead.get('mean_step_ms'):.1f} ms")
        parts.append(text + ".")
    return Finding("throughput", tuple(w.label for w in winners), value, tuple(parts))


def _prefix_reuse(lead: _Entry, others: list[_Entry]) -> list[str]:
    """A sentence when the winner skipped markedly more prefill through prefix-cache hits."""
    behind = [e for e in others if lead.get("prefix_hit_tokens") > 1.1 * e.get("prefix_hit_tokens")]
    if not behind:
        return []
    listed = ", ".join(f"{e.label} {count(e.get('prefix_hit_tokens'))}" for e in behind)
    return [f"{lead.label} reused {count(lead.get('prefix_hit_tokens'))} prompt tokens from the "
            f"prefix cache instead of recomputing them ({listed})."]


def _ttft(entries: list[_Entry]) -> Finding | None:
    winners = _best(entries, "ttft_p99_s", higher=False)
    if not winners:
        return None
    lead = winners[0]
    value = seconds(lead.get("ttft_p99_s"))
    others = [e for e in entries if e not in winners and is_number(e.get("ttft_p99_s"))]
    if not others:
        return Finding("TTFT p99", tuple(w.label for w in winners), value,
                       (f"All within {pct(TIE_RELATIVE)}: no allocator made requests wait for "
                        "memory; TTFT is prefill time.",))
    lead_queue = time_weighted_mean(lead.run.steps, "waiting")
    parts = [f"{lead.label}: {lead_queue:.1f} requests waiting on average (time-weighted), "
             f"{count(lead.get('preemptions'))} preemptions.", *_prefix_reuse(lead, others)]
    for entry in others:
        text = (f"{entry.label}: p99 {seconds(entry.get('ttft_p99_s'))}, "
                f"{time_weighted_mean(entry.run.steps, 'waiting'):.1f} waiting")
        if entry.get("preemptions") > 0:
            text += f", {count(entry.get('preemptions'))} preemptions"
        parts.append(text + ".")
    return Finding("TTFT p99", tuple(w.label for w in winners), value, tuple(parts))


def trace_verdict(trace: str, labelled_runs: list[tuple[str, Run]],
                  facts: AllocatorFacts = NO_FACTS) -> TraceVerdict:
    notes = [note for label, run in labelled_runs for note in run_notes(label, run)]
    # A run that never ran a step (no requests, or every one rejected) has nothing to compare.
    entries = [_Entry(label, run) for label, run in labelled_runs if not run.steps.empty]
    labels = tuple(entry.label for entry in entries)
    if len(entries) < 2:
        if entries:
            notes.append(f"{entries[0].label} is the only run that admitted requests on this "
                         "trace: nothing to compare it with (its figures are in the section).")
        return TraceVerdict(trace, labels, (), tuple(notes))
    rules = (partial(_utilization, facts=facts), _concurrency, _throughput, _ttft)
    findings = [finding for rule in rules if (finding := rule(entries)) is not None]
    return TraceVerdict(trace, labels, tuple(findings), tuple(notes))


def overall_line(verdict: TraceVerdict) -> str:
    """One sentence: who is best (alone or tied) on most of the questions of this trace."""
    if not verdict.findings:
        return f"{verdict.trace}: fewer than two runs produced numbers to compare."
    total = len(verdict.findings)
    best = {label: sum(label in f.winners for f in verdict.findings) for label in verdict.labels}
    if all(n == total for n in best.values()):
        return f"{verdict.trace}: every allocator ties on every question."
    top = max(best.values())
    leaders = [label for label in verdict.labels if best[label] == top]
    behind = ", ".join(f"{label} {best[label]}" for label in verdict.labels
                       if best[label] < top)
    return (f"{verdict.trace}: best or tied-best on {top} of {total} questions: "
            f"{', '.join(leaders)}; the others: {behind}.")


def regime_lines(labelled_runs: list[tuple[str, Run]]) -> list[str]:
    """The load regime of each run, with the figures that placed it there."""
    from reports.regime import regime

    lines = []
    for label, run in labelled_runs:
        placed = regime(run)
        lines.append(f"{label}: {placed.name} ({placed.why}).")
    return lines


def sustained_line(sustained: dict[str, float], step: float) -> str:
    """Who sustains the highest rate under the SLO: named when no other run reaches the same
    grid rate (the curve's resolution is one grid step), else a tie."""
    if not sustained:
        return "No capacity curve: the runs hold one rate only."
    best = max(sustained.values())
    leaders = [label for label, rate in sustained.items() if rate >= best / step ** 0.5]
    listed = ", ".join(f"{label} {rate:.2f}" for label, rate in sustained.items())
    if best <= 0:
        return f"No allocator met the SLO at the lowest rate ({listed} req/s)."
    if len(leaders) == 1:
        return (f"{leaders[0]} sustains the highest rate under the SLO, at least one grid step "
                f"(x{step:g}) ahead of every other ({listed} req/s).")
    return (f"Tie at the top (the curve resolves rates to one grid step, x{step:g}): "
            f"{', '.join(leaders)} ({listed} req/s).")
