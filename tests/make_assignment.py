"""Write a hand-out of etr.py: the named functions keep their signature, docstring (with the equation) and
shape comments; their code becomes `raise NotImplementedError`. Everything else is etr.py verbatim.

    python tests/make_assignment.py clipped_surrogate etr_bounds erc_keep_mask > hw_etr.py
    ETR_MODULE=hw_etr.py python -m pytest -q tests/test_etr.py      # grade it (README: Teaching with this code)

A shape comment `x = ...  # [B, T]  what x is` of the solution becomes the line `# x: [B, T]  what x is`, so the
student sees the intermediate tensors and their shapes, not the code. Needs the standard library only.
"""
import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "etr.py"


def comment_lines(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line (tokenize: a '#' inside a string is no comment)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def hint(statement, comment: str) -> str:
    """The comment of a solution line, without the code: `x = f(y)  # [B]` -> `x: [B]`."""
    text = comment.lstrip("#").strip()
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        names = [", ".join(map(ast.unparse, t.elts)) if isinstance(t, ast.Tuple) else ast.unparse(t) for t in targets]
        return f"{' = '.join(names)}: {text}"
    if isinstance(statement, ast.Return):
        return f"returns: {text}"
    return text


def stub(func, lines: list[str], comments: dict[int, str]) -> list[str]:
    """def line(s) and docstring of func as written, then its comments as hints, then the raise."""
    body = func.body[1:] if ast.get_docstring(func) is not None else func.body
    if not body:  # a function that is only a docstring has no code to hide
        return lines[func.lineno - 1:func.end_lineno]
    indent = " " * body[0].col_offset
    out = lines[func.lineno - 1:body[0].lineno - 1]  # decorators above the def line stay where they are
    statements = {}  # line -> the innermost statement that starts there
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.stmt):
            statements[node.lineno] = node
    for line in range(body[0].lineno, func.end_lineno + 1):
        if line in comments:
            out.append(f"{indent}# {hint(statements.get(line), comments[line])}\n")
    out.append(f'{indent}raise NotImplementedError("{func.name}: your code here (the equation is in the docstring)")\n')
    return out


def make_assignment(names: list[str], source: str) -> str:
    """source with the bodies of the top-level functions `names` replaced (ValueError for an unknown name)."""
    tree = ast.parse(source)
    funcs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    unknown = [name for name in names if name not in funcs]
    if unknown or not names:
        problem = f"unknown function(s) {', '.join(unknown)}" if unknown else "name the functions to hand out"
        raise ValueError(f"{problem}: choose from {', '.join(funcs)}")
    lines, comments = source.splitlines(keepends=True), comment_lines(source)
    for name in sorted(set(names), key=lambda n: funcs[n].lineno, reverse=True):  # bottom up: line numbers hold
        func = funcs[name]
        lines[func.lineno - 1:func.end_lineno] = stub(func, lines, comments)
    return "".join(lines)


def main(argv=None) -> int:
    source = SOURCE.read_text()
    functions = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    parser = argparse.ArgumentParser(prog="make_assignment.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1] + f"\nfunctions of etr.py: {', '.join(functions)}")
    parser.add_argument("names", nargs="*", metavar="function", help="top-level functions of etr.py to hand out")
    names = parser.parse_args(argv).names
    try:
        sys.stdout.write(make_assignment(names, source))
    except ValueError as e:
        print(f"make_assignment.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
