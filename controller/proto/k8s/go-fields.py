#!/usr/bin/env python3
"""Writes go-fields.txt: what a protobuf decoder must know about Kubernetes' Go types beyond
generated.proto, so that a decoded object reads as the JSON the Go client would have sent.

    go-fields.py API_DIR APIMACHINERY_DIR AGGREGATOR_DIR > go-fields.txt

API_DIR, APIMACHINERY_DIR and AGGREGATOR_DIR are checkouts of k8s.io/api, k8s.io/apimachinery
and k8s.io/kube-aggregator at the tags named in README.md. Each line is `<fact> <proto message> <field number>`:

- keep-zero: a scalar field that Go's JSON keeps when it is zero (a pointer, or no omitempty).
  Go's protobuf encoder writes every non-pointer scalar, so a zero one that Go's JSON would omit
  is dropped by the decoder; a pointer's zero (`replicas: 0`) is meaningful and kept.
- inline: a field Go's JSON flattens into its parent (`json:",inline"`), e.g. Volume's source.
"""
import pathlib
import re
import sys

api, machinery, aggregator = map(pathlib.Path, sys.argv[1:4])
PACKAGES = [(api / d, "k8s.io.api." + d.replace("/", "."))
            for d in ["core/v1", "apps/v1", "batch/v1", "coordination/v1", "discovery/v1",
                      "autoscaling/v1", "policy/v1", "storage/v1", "rbac/v1", "scheduling/v1"]]
PACKAGES.append((machinery / "pkg/apis/meta/v1", "k8s.io.apimachinery.pkg.apis.meta.v1"))
PACKAGES.append((aggregator / "pkg/apis/apiregistration/v1",
                 "k8s.io.kube_aggregator.pkg.apis.apiregistration.v1"))
SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string"}
GO_FIELD = re.compile(r'^\t(?:\w+\s+)?(\S+)\s+`json:"([^"]*)"[^`]*protobuf:"([^"]*)"')


def proto_scalars(path):
    """(message, number) of every scalar field in a generated.proto."""
    out, msg = set(), None
    for line in path.read_text().splitlines():
        m = re.match(r"^message (\w+) \{", line)
        if m:
            msg = m.group(1)
            continue
        m = re.match(r"^  (?:optional|repeated) (\S+) \w+ = (\d+);", line)
        if msg and m and m.group(1) in SCALARS:
            out.add((msg, m.group(2)))
    return out


facts = set()
for d, pkg in PACKAGES:
    scalars = proto_scalars(d / "generated.proto")
    for f in sorted(d.glob("*.go")):
        if f.name.endswith("_test.go") or f.name.startswith(("zz_", "generated")):
            continue
        msg = None
        for line in f.read_text().splitlines():
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                msg = m.group(1)
                continue
            if line.startswith("}"):
                msg = None
            m = GO_FIELD.match(line) if msg else None
            if not m or m.group(3) == "-":
                continue
            go_type, json_tag, proto_tag = m.groups()
            number = proto_tag.split(",")[1]
            json_name, *json_opts = json_tag.split(",")
            if json_name == "" and "inline" in json_opts:
                facts.add(f"inline {pkg}.{msg} {number}")
            elif (msg, number) in scalars and (
                    go_type.startswith("*") or "omitempty" not in json_opts):
                facts.add(f"keep-zero {pkg}.{msg} {number}")
print("\n".join(sorted(facts)))
