"""Prints, at the end of the run, what each MCP client could not do and
where the compatibility matrix was written."""

from stack import LIMITATIONS, MATRIX


def pytest_terminal_summary(terminalreporter):
    if not LIMITATIONS and not MATRIX.rows:
        return
    terminalreporter.section("interop: MCP clients")
    for client, text in LIMITATIONS:
        terminalreporter.write_line(f"{client} cannot: {text}")
    if MATRIX.path.exists() and MATRIX.rows:
        terminalreporter.write_line(f"compatibility matrix: {MATRIX.path}")
