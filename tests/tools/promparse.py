#!/usr/bin/python3
"""Parse a Prometheus text exposition with the reference parser (python3-prometheus-client),
check what the parser does not, and print one "name{label="v",...} value" line per sample with
labels sorted, so shell tests can grep and compare. Exit 1 with a message on any defect.

Checks: every family has a TYPE; counters and histogram parts are non-negative; histogram
buckets are cumulative, end with le="+Inf", and +Inf equals _count."""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    out = []
    for fam in text_string_to_metric_families(text):
        if fam.name not in typed and fam.name + "_total" not in typed:
            sys.exit(f"family {fam.name} has no TYPE line")
        buckets = {}
        counts = {}
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            value = int(s.value) if float(s.value).is_integer() else s.value
            out.append(f"{s.name}{{{labels}}} {value}")
            if fam.type in ("counter", "histogram") and s.value < 0:
                sys.exit(f"negative {fam.type} sample {s.name}{{{labels}}}")
            if fam.type == "histogram":
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                if s.name.endswith("_bucket"):
                    buckets.setdefault(key, []).append((s.labels["le"], s.value))
                elif s.name.endswith("_count"):
                    counts[key] = s.value
        for key, bs in buckets.items():
            values = [v for _, v in bs]
            if values != sorted(values):
                sys.exit(f"{fam.name}{key}: buckets are not cumulative")
            if bs[-1][0] != "+Inf" or bs[-1][1] != counts.get(key):
                sys.exit(f"{fam.name}{key}: +Inf bucket missing or not equal to _count")
    print("\n".join(out))


if __name__ == "__main__":
    main()
