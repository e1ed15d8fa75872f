"""The mixin's settings: selectors, thresholds and names shared by the dashboards and the rules.

Change a value here and run ``python grafana/generate.py``: dashboards and rules are written
afresh, so a threshold drawn on a panel is always the one the alert uses.
"""

from __future__ import annotations

# The Prometheus job that scrapes the agents. Only the rules that look at `up` need it; every
# other rule works on pktagent_* series, whatever job scrapes them.
JOB_SELECTOR = 'job="pktagent"'

# Where alerts point on-call people: the runbook section of grafana/README.md, by anchor.
RUNBOOK_BASE = "https://github.com/pktagent/pktagent/blob/main/grafana/README.md"

# Dashboards: fixed uids (links and bookmarks survive re-imports) and the tag that links them.
TAG = "pktagent"
UID_FLEET = "pktagent-fleet"
UID_AGENT = "pktagent-agent"
UID_TRAFFIC = "pktagent-traffic"
TOPK = 10  # fleet panels show the worst this many agents
REFRESH = "30s"

# Alert thresholds, each with how long it must hold ("for").
DOWN_FOR = "5m"  # agent not answering scrapes
ABSENT_FOR = "15m"  # no pktagent target scraped at all
CAPTURE_DOWN_FOR = "5m"
SILENCE_WINDOW = "10m"  # no packet at all in this window ...
SILENCE_FOR = "5m"
USUAL_WINDOW = "6h"  # ... on an interface that, in this window before it, saw ...
USUAL_MIN_PPS = 0.1  # ... at least this many packets per second on average
DROP_RATIO = 0.01  # share of arriving packets lost, at any one stage
DROP_FOR = "10m"
QUEUE_FILL = 0.8  # peak queue depth over 5m, as a share of its capacity
QUEUE_FOR = "15m"
P99_BUDGET_SECONDS = 0.1  # 99th percentile of batch processing time
P99_FOR = "15m"
UTILISATION = 0.9  # busy share of the processing workers, averaged over them (headroom = 1 - it)
UTILISATION_FOR = "15m"
FLOW_FILL = 0.9  # active flows as a share of flows.max_flows
FLOW_FOR = "15m"
DECODE_ERROR_RATIO = 0.05  # share of decoded packets with a header that could not be read
DECODE_FOR = "15m"
LABEL_CHURN_PER_MINUTE = 1.0  # device or domain series dropped a minute, on average (the agent re-ranks once a minute) ...
LABEL_CHURN_WINDOW = "15m"  # ... over this window ...
LABEL_CHURN_FOR = "30m"  # ... for this long: sustained churn, not a one-off reshuffle
