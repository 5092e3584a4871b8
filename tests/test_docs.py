"""The documentation stays true to the code, and the repository speaks to its users.

- No tracked text file holds work-log wording (numbered work rounds, the current sitting of
  work), tracker numbers or paths outside the repository.
- Every ``python train.py / eval.py / export.py / infer.py / scripts/*.py`` command in README.md
  and docs/ (and the launchers' train.py arguments) parses with that script's own parser, and
  every config it names exists.
- Every repository path, Markdown link and ``mindseg.`` name the docs use exists.
- Every name docs/architecture.md and docs/contracts.md cite is defined in the code, and every
  page of docs/ is linked from the README.
"""
import argparse
import ast
import builtins
import contextlib
import glob
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.relpath(os.path.abspath(__file__), ROOT).replace(os.sep, "/")
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
BINARY = (".png", ".jpg", ".jpeg", ".gif", ".ckpt", ".mindir", ".air", ".npy", ".npz", ".pkl",
          ".pth", ".mindrecord", ".db", ".zip", ".gz", ".whl")

# Wording of a work log rather than of a library: numbered work rounds, the sitting a figure was
# measured in, tracker numbers, and paths outside the repository (examples in the test below).
WORK_LOG = [
    (re.compile(r"\bstops? \d+\b", re.I), "a numbered work round"),
    (re.compile(r"\b(this|that|earlier|previous|last|next) stop\b", re.I), "a work round"),
    (re.compile(r"\brounds? \d+\b|\b(this|that|last|previous|next) round\b", re.I), "a work round"),
    (re.compile(r"\b(this|that|same|one|each|earlier|previous|next|a) session\b|\bsession's\b",
                re.I), "a work session"),
    (re.compile(r"\bissues? #?\d+\b|\bissue #\d+", re.I), "an issue number"),
    (re.compile(r"\.\./shared\b|/work/(shared|wt|main)\b"), "a path outside the repository"),
    (re.compile(r"\b(DESIGN|PLATFORM|STYLE|HELPERS)\.md\b"), "a file outside the repository"),
]


def tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        out = [os.path.relpath(os.path.join(d, f), ROOT) for d, dirs, files in os.walk(ROOT)
               for f in files if ".git" not in d.split(os.sep)]
    for path in sorted(p for p in out if p and not p.lower().endswith(BINARY)):
        try:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                yield path, f.read()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue


def work_log_lines(path, text):
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in WORK_LOG:
            match = pattern.search(line)
            if match:
                yield f"{path}:{number}: {what}: {match.group(0)!r}"


def test_no_work_log_wording_issue_numbers_or_outside_paths():
    found = [hit for path, text in tracked_text_files() if path != THIS
             for hit in work_log_lines(path, text)]
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_is_meant_to():
    stop, session, issue, shared = "stop", "session", "issue", "../" + "shared"  # not to match here
    text = (f"trained in {stop} 21\nmeasured this {session}\nsee {shared}/peers/x.py\nas {issue} 15 asks\n"
            "in round 3\nthe last stop\nstop_gradient is fine\nscope='session' is fine\n"
            "a per-round NMS step\nround(2.5)\n")
    lines = sorted({hit.split(":")[1] for hit in work_log_lines("f", text)})
    assert lines == ["1", "2", "3", "4", "5", "6"]


# ---------------------------------------------------------------- commands in the docs

SCRIPT_FILES = {"train.py", "eval.py", "export.py", "infer.py"}
LAUNCHERS = {"scripts/run_msrun_train.sh": 1, "scripts/run_distribute_train.sh": 1,
             "scripts/quickstart.sh": 0}  # their arguments after N are train.py's
SHELL_BREAKS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>", "2>&1"}


def doc_texts():
    for path in DOCS:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            yield path, f.read()


def commands(path, text):
    """``(line number, command)`` of every shell line in fenced code blocks and every inline code
    span of ``text``; backslash continuations joined."""
    lines, fenced, number = text.splitlines(), False, 0
    while number < len(lines):
        line, start = lines[number], number + 1
        number += 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            while line.rstrip().endswith("\\") and number < len(lines):
                line = line.rstrip()[:-1] + " " + lines[number].strip()
                number += 1
            yield start, line.strip()
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield start, span.strip()


def script_invocations(command):
    """``(script, argv)`` for each mindseg script the shell command runs."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return []
    found = []
    for i, token in enumerate(tokens):
        script = token[2:] if token.startswith("./") else token
        is_python = i > 0 and os.path.basename(tokens[i - 1]) in ("python", "python3")
        if is_python and (script in SCRIPT_FILES or re.fullmatch(r"scripts/\w+\.py", script)):
            argv, skip = tokens[i + 1:], 0
        elif i > 0 and tokens[i - 1] == "bash" and script in LAUNCHERS:
            argv, skip = tokens[i + 1:], LAUNCHERS[script]
            if script == "scripts/quickstart.sh":  # it passes its own --config
                argv = ["--config", "shapes/mask_rcnn_shapes"] + argv
            script = "train.py"
        else:
            continue
        ends = [k for k, t in enumerate(argv) if t in SHELL_BREAKS]
        argv = argv[:ends[0]] if ends else argv
        found.append((script, argv[skip:]))
    return found


class _Parsed(Exception):
    pass


@contextlib.contextmanager
def _argv(argv):
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def parse_with_own_parser(script, argv):
    """Run ``script``'s main on ``argv`` until its parser has parsed; returns the error text
    (empty when it parsed)."""
    spec = importlib.util.spec_from_file_location(
        "doc_" + re.sub(r"\W", "_", script), os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the parsers' entry points (parse_args and parse_intermixed_args each call
    # parse_known_args or parse_known_intermixed_args, never the other entry point)
    originals = {name: getattr(argparse.ArgumentParser, name)
                 for name in ("parse_args", "parse_intermixed_args")}

    def parse_then_stop(original):
        def parse(self, args=None, namespace=None):
            original(self, args, namespace)
            raise _Parsed
        return parse

    stderr = io.StringIO()
    for name, original in originals.items():
        setattr(argparse.ArgumentParser, name, parse_then_stop(original))
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if inspect.signature(module.main).parameters:
                module.main(argv)
            else:
                with _argv([script] + list(argv)):
                    module.main()
    except _Parsed:
        return ""
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "exit"
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)
    return "main() ran past its parser"


def config_problem(value):
    if "$" in value or re.fullmatch(r"[A-Z_]+", value):  # a placeholder
        return ""
    path = value if value.endswith((".yml", ".yaml")) else f"config/{value}.yml"
    return "" if os.path.isfile(os.path.join(ROOT, path)) else f"no config {path}"


def all_invocations():
    for path, text in doc_texts():
        for line, command in commands(path, text):
            for script, argv in script_invocations(command):
                yield f"{path}:{line}", script, argv


def test_the_docs_show_each_script():
    scripts = {script for _, script, _ in all_invocations()}
    assert SCRIPT_FILES | {"scripts/convert_weights.py", "scripts/convert_coco.py",
                           "scripts/make_synthetic_coco.py"} <= scripts


def test_every_documented_command_parses_and_names_existing_configs():
    problems = []
    for where, script, argv in all_invocations():
        if not os.path.isfile(os.path.join(ROOT, script)):
            problems.append(f"{where}: {script} does not exist")
            continue
        error = parse_with_own_parser(script, argv)
        if error:
            problems.append(f"{where}: python {script} {shlex.join(argv)}: {error}")
        for flag, value in zip(argv, argv[1:]):
            if flag == "--config" and config_problem(value):
                problems.append(f"{where}: {config_problem(value)}")
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_a_wrong_flag():
    assert parse_with_own_parser("eval.py", ["--config", "C", "--no_such_flag", "1"])
    assert not parse_with_own_parser("eval.py", ["--config", "C", "--draw", "4"])
    assert config_problem("config/shapes/no_such.yml")
    assert not config_problem("shapes/mask_rcnn_shapes")


# ---------------------------------------------------------------- paths, links, names

PATH_TOKEN = re.compile(r"(?<![\w/.$-])((?:config|scripts|docs|examples|dev|tests|mindseg)/"
                        r"[\w/.*-]*[\w*/])(?![<\w])")


def test_every_path_and_link_in_the_docs_exists():
    missing = []
    for path, text in doc_texts():
        for number, line in enumerate(text.splitlines(), 1):
            for token in PATH_TOKEN.findall(line):
                if not glob.glob(os.path.join(ROOT, token)):
                    missing.append(f"{path}:{number}: {token}")
            for link in re.findall(r"\]\(([^)\s#]+)", line):
                if "://" not in link and not os.path.exists(
                        os.path.join(ROOT, os.path.dirname(path), link)):
                    missing.append(f"{path}:{number}: link {link}")
    assert not missing, "\n".join(missing)


def resolve(dotted):
    """The object a dotted ``mindseg.`` name refers to (ImportError / AttributeError if none)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_mindseg_name_in_the_docs_exists():
    missing = []
    for path, text in doc_texts():
        for number, line in enumerate(text.splitlines(), 1):
            names = re.findall(r"(?<![\w/])mindseg(?:\.[A-Za-z_]\w*)+", line)
            for module, imported in re.findall(r"from (mindseg[\w.]*) import ([\w, ]+)", line):
                names += [f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()]
            for name in names:
                try:
                    resolve(name)
                except (ImportError, AttributeError) as err:
                    missing.append(f"{path}:{number}: {name} ({err})")
    assert not missing, "\n".join(missing)


def defined_names():
    """Every name the code defines: functions, classes, assigned names and attributes, arguments
    and keywords, string keys of dict literals; module and package names; Python's builtins."""
    names = set(dir(builtins)) | {"mindseg"}
    files = glob.glob(os.path.join(ROOT, "mindseg", "**", "*.py"), recursive=True) + \
        glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "scripts", "*.py"))
    for file in files:
        names |= set(os.path.relpath(file, ROOT)[:-3].split(os.sep))
        with open(file, encoding="utf-8") as f:
            tree = ast.parse(f.read(), file)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                names.add(node.slice.value)
            elif isinstance(node, ast.Dict):
                names |= {k.value for k in node.keys if isinstance(k, ast.Constant)
                          and isinstance(k.value, str)}
    return names


def config_keys():
    with open(os.path.join(ROOT, "config", "base.yml"), encoding="utf-8") as f:
        base = yaml.safe_load(f)
    keys, todo = set(), [("", base)]
    while todo:
        prefix, node = todo.pop()
        for key, value in node.items():
            keys.add(prefix + key)
            if isinstance(value, dict):
                todo.append((prefix + key + ".", value))
    return keys


def architecture_problems(text, names, keys):
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            token = re.sub(r"\(.*\)$", "", span.strip())
            if re.fullmatch(r"[\w./-]+\.(py|yml|md)", token):
                if not any(os.path.exists(os.path.join(ROOT, base, token))
                           for base in ("", "mindseg", "mindseg/models", "docs")):
                    problems.append(f"{number}: no file {token}")
            elif re.fullmatch(r"[A-Za-z_]\w*", token):
                if token not in names:
                    problems.append(f"{number}: {token} is not defined in the code")
            elif re.fullmatch(r"(data|model|train|eval|export)(\.\w+)+", token):
                if token not in keys:
                    problems.append(f"{number}: {token} is not a key of config/base.yml")
    return problems


@pytest.mark.parametrize("page", ["architecture.md", "contracts.md"])
def test_every_name_the_architecture_pages_cite_exists(page):
    with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as f:
        text = f.read()
    problems = architecture_problems(text, defined_names(), config_keys())
    assert not problems, "\n".join(f"docs/{page}:{p}" for p in problems)


def test_every_page_is_linked_from_the_readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    pages = [p for p in DOCS if p.startswith("docs/")]
    assert [p for p in pages if f"]({p})" not in readme] == []


def test_the_architecture_check_catches_a_removed_name():
    text = "`build_backbone` then `build_centermask_backbone()` and `model.backbone.nam`\n"
    assert architecture_problems(text, {"build_backbone"}, {"model.backbone.name"}) == [
        "1: build_centermask_backbone is not defined in the code",
        "1: model.backbone.nam is not a key of config/base.yml"]
    # a file is found from the repository, mindseg/, mindseg/models/ or docs/, not anywhere
    assert architecture_problems("`models/dense_heads/rpn.py`, `models/rpn.py`", set(), set()) == [
        "1: no file models/rpn.py"]


def test_license_is_declared():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        assert "Apache License" in f.read(200)
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        assert re.search(r'^license = (\{text = )?"Apache-2.0"\}?$', f.read(), re.M)


@pytest.mark.parametrize("tool", ["check_parity_torchvision.py", "parity_common.py",
                                  "peer_flops.py", "benchmark_stages.py"])
def test_maintainer_instruments_are_not_user_tools(tool):
    """Instruments that measure mindseg against PyTorch live in dev/, and the README does not
    name them."""
    assert os.path.isfile(os.path.join(ROOT, "dev", tool))
    assert not os.path.exists(os.path.join(ROOT, "scripts", tool))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert tool not in f.read()


def test_the_custom_data_example_config_loads():
    """examples/custom_data/ is the config docs/custom_data.md trains with: every key it sets is a
    key of config/base.yml, of the right type."""
    if "train.pre_trained" not in config_keys():
        pytest.skip("config/base.yml has no fine-tuning keys yet (train.pre_trained, data.train_ann)")
    from mindseg.config import load_config
    cfg = load_config(os.path.join(ROOT, "examples", "custom_data", "mask_rcnn_R50_finetune.yml"))
    assert cfg.data.train_ann and cfg.train.pre_trained and cfg.train.eval_interval > 0


def test_the_readme_shows_what_the_quick_start_prints():
    """The listing the README shows is the one scripts/quickstart.sh ends with."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, "scripts", "quickstart.sh"), encoding="utf-8") as f:
        script = f.read()
    block = re.search(r"```\n(done in .*?)```", readme, re.S)
    assert block, "README.md shows no quick-start listing"
    listing = block.group(1).split("\n\n")[0]  # the file list; the val lines follow it
    labels = re.findall(r"^  (\S.*?)\s{2,}", listing, re.M)
    assert len(labels) >= 6
    assert [label for label in labels if f'echo "  {label}  ' not in script] == []
    assert re.search(r'echo "done in .* s \(\$MODEL\):"', script)
    assert "val (mask_rcnn):" in block.group(1) and 'echo "val ($MODEL):"' in script
