"""Generated documentation: the stack file reference (from the JSON Schema that `ecsflow schema`
prints) and the architecture pictures (drawn from the example stacks with `diagrams` and graphviz).

    uv run python -m ecsflow.docs          # or ./scripts/gen_docs: rewrite docs/stack-reference.md + pictures
    uv run python -m ecsflow.docs --check  # exit 1 when docs/stack-reference.md is out of date

A test runs the check, so a change to spec/ without regenerating fails with the command to run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "stack-reference.md"
PICTURES = {"stacks/library.yaml": "docs/architecture.png", "stacks/shop.yaml": "docs/architecture-shop.png"}
REGENERATE = "./scripts/gen_docs"


# ---------------------------------------------------------------- stack file reference


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(name: str) -> str:
    return name.lower()


def _type(prop: dict[str, Any]) -> str:
    """A field's type in words, with links to the nested sections."""
    if "$ref" in prop:
        name = _ref_name(prop["$ref"])
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in prop:
        kinds = [k for k in prop["anyOf"] if k.get("type") != "null"]
        text = " or ".join(_type(k) for k in kinds)
        return f"{text} or null" if len(kinds) < len(prop["anyOf"]) else text
    if "enum" in prop:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"map of string to {_type(extra)}"
        return "mapping"
    return str(kind or "any")


def _constraints(prop: dict[str, Any]) -> str:
    parts = []
    for source in [prop, *prop.get("anyOf", [])]:
        for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
            if key in source:
                parts.append(f"{word} {source[key]}")
        for key, word in (("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"),
                          ("maxItems", "max items"), ("minProperties", "min entries")):
            if key in source:
                parts.append(f"{word} {source[key]}")
        if "pattern" in source:
            parts.append(f"pattern `{source['pattern']}`")
    return "; ".join(parts)


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in prop:
        return ""
    value = prop["default"]
    if isinstance(value, dict) and "$ref" in prop:
        return "(see section)"
    text = json.dumps(value, ensure_ascii=False)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:37]}...`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _order(schema: dict[str, Any]) -> list[str]:
    """Sections in the order a reader meets them: Stack's fields first, depth first."""
    defs = schema.get("$defs", {})
    seen: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                name = _ref_name(node["$ref"])
                if name not in seen:
                    seen.append(name)
                    visit(defs[name].get("properties", {}))
            for key, value in node.items():
                if key != "$ref":
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema.get("properties", {}))
    return seen + sorted(set(defs) - set(seen))


def _section(name: str, model: dict[str, Any], level: str = "##") -> list[str]:
    out = [f"{level} {name}", ""]
    if model.get("description"):
        out += [" ".join(model["description"].split()), ""]
    required = set(model.get("required", []))
    out += ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    for field, prop in model.get("properties", {}).items():
        description = " ".join(prop.get("description", "").split())
        out.append(f"| `{field}` | {_cell(_type(prop))} | {_cell(_default(prop, field in required))} | "
                   f"{_cell(_constraints(prop))} | {_cell(description)} |")
    return [*out, ""]


def stack_reference(schema: dict[str, Any] | None = None) -> str:
    if schema is None:
        from spec import Stack

        schema = Stack.model_json_schema()
    lines = ["# Stack file reference", "",
             "<!-- Generated from the JSON Schema (`ecsflow schema`) by `python -m ecsflow.docs`; do not edit. "
             f"Regenerate with `{REGENERATE}`. -->", "",
             "One YAML file describes one application environment. Unknown keys are errors. "
             "See [concepts](concepts.md) for how ecsflow turns it into AWS resources, and "
             "[stacks/library.yaml](../stacks/library.yaml) and [stacks/shop.yaml](../stacks/shop.yaml) "
             "for two complete examples.", ""]
    order = _order(schema)
    lines += ["Sections: " + ", ".join(f"[{n}](#{_anchor(n)})" for n in ["Stack", *order]), ""]
    lines += _section("Stack", schema)
    for name in order:
        lines += _section(name, schema["$defs"][name])
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- architecture picture


def draw_architecture(stack_file: Path, out_png: Path) -> Path:
    """The stack as AWS boxes: who talks to whom, as the stack file configures it."""
    from diagrams import Cluster, Diagram, Edge
    from diagrams.aws.compute import ECR, Fargate
    from diagrams.aws.database import RDSPostgresqlInstance
    from diagrams.aws.management import CloudwatchLogs
    from diagrams.aws.network import ALB, CloudFront, NATGateway
    from diagrams.aws.security import WAF, SecretsManager
    from diagrams.onprem.client import Users

    from spec import load_stack

    spec = load_stack(stack_file)
    cdn = getattr(getattr(spec, "load_balancer", None), "cdn", None)
    waf = getattr(getattr(spec, "load_balancer", None), "waf", None)
    title = f"{spec.name}-{spec.env} ({spec.region or 'AWS_REGION'})"
    graph = {"fontsize": "20", "pad": "0.4", "splines": "spline"}
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with Diagram(title, filename=str(out_png.with_suffix("")), outformat="png", show=False, direction="LR",
                 graph_attr=graph):
        users = Users("users")
        front = users
        if cdn is not None and cdn.enabled:
            front = CloudFront("CloudFront")
            users >> front
        if waf is not None and waf.enabled:
            shield = WAF("WAF")
            front >> shield
            front = shield
        with Cluster(f"VPC {spec.network.vpc_cidr}"):
            with Cluster("public subnets: " + ", ".join(spec.network.availability_zones)):
                alb = ALB("ALB (HTTPS, TLS 1.3)")
                nat_count = len(spec.network.availability_zones) if spec.nat_mode == "per_az" else 1
                nat = NATGateway(f"NAT gateway x{nat_count}")
            with Cluster("private subnets"):
                with Cluster("ECS cluster (Fargate + Spot)"):
                    tasks = {}
                    for name, svc in spec.services.items():
                        routes = " ".join(svc.path_patterns) if svc.load_balanced else "worker, no LB target"
                        tasks[name] = Fargate(f"{name}\n{routes}\n{svc.cpu / 1024:g} vCPU, {svc.memory} MiB")
                az = "Multi-AZ" if spec.database.multi_az else "Single-AZ"
                db = RDSPostgresqlInstance(f"PostgreSQL {spec.database.engine_version}\n"
                                           f"{spec.database.instance_class} {az}")
        registry = ECR("ECR")
        secrets = SecretsManager("Secrets Manager")
        logs = CloudwatchLogs("CloudWatch Logs")
        front >> alb
        for name, svc in spec.services.items():
            if svc.load_balanced:
                alb >> Edge(label=" ".join(svc.path_patterns)) >> tasks[name]
            if svc.uses_database_secret:
                tasks[name] >> db
                secrets >> Edge(style="dashed") >> tasks[name]
            registry >> Edge(style="dotted") >> tasks[name]
            tasks[name] >> Edge(style="dotted") >> logs
            tasks[name] >> Edge(style="dashed", color="gray") >> nat
    return out_png


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecsflow.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/stack-reference.md is current")
    parser.add_argument("--no-pictures", action="store_true", help="skip the architecture pictures")
    args = parser.parse_args(argv)
    text = stack_reference()
    if args.check:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE.relative_to(ROOT)} is out of date with spec/; run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    if not args.no_pictures:
        for stack, picture in PICTURES.items():
            print(f"wrote {draw_architecture(ROOT / stack, ROOT / picture).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
