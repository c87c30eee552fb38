"""The compliance report's charts, as PNG bytes drawn from the report's own figures.

Figures are made with matplotlib's object API on the Agg canvas: no pyplot, so no global state,
no display and no backend chosen by the environment; nothing is fetched from the network.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter, DayLocator, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from retention_pipelines.engine.report.figures import MET, MISSED, OPEN, ComplianceReport

COLOURS = ["#2f6690", "#d9822b", "#3a7d44", "#9e2a2b", "#6c4f9e", "#7a7a7a", "#c4a000", "#1b998b"]


def charts(report: ComplianceReport) -> dict[str, bytes]:
    """Chart name → PNG; a chart with nothing to show this month is left out."""
    drawn = {"removals_per_day": removals_per_day(report), "sla_breaches": sla_breaches(report),
             "queue_items": queue_items(report), "erasure_requests": erasure_requests(report)}
    return {name: png for name, png in drawn.items() if png is not None}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _figure(height: float = 3.2) -> Figure:
    return Figure(figsize=(9, height), dpi=100, layout="constrained")


def _legend_beside(axes) -> None:
    """Right of the plot, where it hides no bar."""
    axes.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def removals_per_day(report: ComplianceReport) -> bytes | None:
    """Records removed or redacted per day, stacked by domain."""
    removal = report.action_groups["removed"]
    per_domain = {domain: [report.count(domain, removal, day) for day in report.days] for domain in report.domains}
    per_domain = {domain: counts for domain, counts in per_domain.items() if any(counts)}
    if not per_domain:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    days = [day.day for day in report.days]
    bottom = [0] * len(days)
    for index, (domain, counts) in enumerate(per_domain.items()):
        axes.bar(days, counts, bottom=bottom, label=domain, color=COLOURS[index % len(COLOURS)], width=0.8)
        bottom = [b + c for b, c in zip(bottom, counts)]
    axes.set_xlabel(f"day of {report.start:%B %Y} (UTC)")
    axes.set_ylabel("records")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Records removed or redacted per day")
    axes.set_xticks(days[::2] if len(days) > 16 else days)
    _legend_beside(axes)
    return _png(figure)


def sla_breaches(report: ComplianceReport) -> bytes | None:
    """Each breach as a bar over the part of the month it lasted."""
    if not report.breaches:
        return None
    figure = _figure(max(1.6, 0.5 + 0.35 * len(report.breaches)))
    axes = figure.add_subplot()
    domains = list(dict.fromkeys(breach.domain for breach in report.breaches))
    for row, breach in enumerate(report.breaches):
        begin = max(breach.opened_at, report.start)
        until = min(breach.closed_at or report.as_of, report.as_of)
        width = max(date2num(until) - date2num(begin), 0.2)  # a breach of minutes still shows
        axes.barh(row, width, left=date2num(begin), height=0.6,
                  color=COLOURS[domains.index(breach.domain) % len(COLOURS)],
                  hatch="//" if breach.closed_at is None else None, edgecolor="white")
    axes.set_yticks(range(len(report.breaches)),
                    [f"#{b.id} {b.domain} {b.kind}" for b in report.breaches], fontsize="small")
    axes.invert_yaxis()
    axes.set_xlim(date2num(report.start), date2num(report.end))
    axes.xaxis.set_major_locator(DayLocator(bymonthday=[1, 8, 15, 22, 29]))
    axes.xaxis.set_major_formatter(DateFormatter("%d %b"))
    axes.set_xlabel(f"day of {report.start:%B %Y} (UTC); hatched: still open at the month's end")
    axes.set_title("SLA breaches")
    return _png(figure)


def queue_items(report: ComplianceReport) -> bytes | None:
    """Items created in the month, by reason: resolved, dismissed, still open."""
    reasons = report.queue_by_reason()
    if not reasons:
        return None
    figure = _figure(max(1.6, 0.8 + 0.4 * len(reasons)))
    axes = figure.add_subplot()
    left = [0] * len(reasons)
    for index, status in enumerate(("resolved", "dismissed", OPEN)):
        values = [getattr(reason, status) for reason in reasons]
        axes.barh(range(len(reasons)), values, left=left, label=status, color=COLOURS[index], height=0.6)
        left = [a + b for a, b in zip(left, values)]
    axes.set_yticks(range(len(reasons)), [reason.reason for reason in reasons], fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("queue items created in the month")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Manual-resolution queue")
    _legend_beside(axes)
    return _png(figure)


def erasure_requests(report: ComplianceReport) -> bytes | None:
    """Requests for erasure by deadline: met, missed, open; and how many were partially blocked."""
    summary = report.erasure_summary()
    if not summary["requests"]:
        return None
    labels = [MET, MISSED, OPEN, "partially_blocked"]
    figure = _figure(2.4)
    axes = figure.add_subplot()
    axes.barh(range(len(labels)), [summary[label] for label in labels],
              color=[COLOURS[2], COLOURS[3], COLOURS[0], COLOURS[1]], height=0.6)
    axes.set_yticks(range(len(labels)), ["deadline met", "deadline missed", "open", "partially blocked"])
    axes.invert_yaxis()
    axes.set_xlabel("requests for erasure received, due or completed in the month")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Requests for erasure")
    return _png(figure)
