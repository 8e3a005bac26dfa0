"""The README's walkthrough is followed literally, against the test stack, as a newcomer would
after `make run`: the variables it prints, the curl lines, the SDK script."""

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from app import devserver
from app.core.settings import Settings
from tests.conftest import API_URL, SANDBOX_URL, wait_for

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(section: str, language: str) -> str:
    """The first fenced `language` block after the heading `section`."""
    after = README[README.index(f"\n## {section}\n") :]
    return re.search(rf"```{language}\n(.*?)```", after, re.S).group(1)


def _on_test_stack(script: str) -> str:
    return script.replace("localhost:8000", API_URL.removeprefix("http://")).replace(
        "localhost:8001", SANDBOX_URL.removeprefix("http://")
    )


async def _run(argv: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (argv, out.decode(), err.decode())
    return out.decode()


async def _make_run_variables(account) -> dict[str, str]:
    """What `make run` prints, made the way it makes them."""
    chat = await asyncio.to_thread(devserver.demo_chat, API_URL, account.token, account.profile_id)
    return {"DMRELAY_KEY": account.token, "PROFILE": account.profile_id, "CHAT": chat}


async def test_make_run_finds_its_demo_chat_again(account):
    first = await _make_run_variables(account)
    again = await _make_run_variables(account)
    assert first["CHAT"] == again["CHAT"]
    chat = await account.client.chats.get(first["CHAT"])
    assert chat.participant_external_id == devserver.SANDBOX_CUSTOMER_ID
    # The printed line sets the variables in a shell, as the README says to use it.
    line = devserver.export_line(first)
    out = await _run(["bash", "-c", f'{line}; echo "$DMRELAY_KEY $PROFILE $CHAT"'], {})
    assert out.split() == [first["DMRELAY_KEY"], first["PROFILE"], first["CHAT"]]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough needs curl")
async def test_readme_curl_walkthrough_runs(account, clean):
    variables = await _make_run_variables(account)
    script = _on_test_stack(_block("Try it", "sh")) + 'printf "\\nMESSAGE=%s\\n" "$MESSAGE"\n'
    out = await _run(["bash", "-euo", "pipefail", "-c", script], variables)
    message_id = re.search(r"^MESSAGE=(\S+)$", out, re.M).group(1)

    async def published() -> bool:
        return (await account.client.messages.get(message_id)).status == "published"

    await wait_for(published)
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert [s["message"]["text"] for s in sent] == ["Your order has shipped!"]


async def test_readme_sdk_script_runs(account, tmp_path):
    variables = await _make_run_variables(account)
    script = tmp_path / "send_dm.py"
    script.write_text(_block("Try it", "python"))
    out = await _run([sys.executable, str(script)], {**variables, "DMRELAY_URL": API_URL})
    assert re.match(r"\S+ published \S+\n", out), out


def test_readme_configuration_table_lists_every_setting():
    section = README[README.index("\n## Configuration\n") :]
    # The first column of each row: the variables it documents.
    names = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", "".join(names)))
    assert {name.upper() for name in Settings.model_fields} <= documented
    assert documented <= {name.upper() for name in Settings.model_fields}


def test_readme_walkthrough_variables_are_what_make_run_prints():
    line = devserver.export_line({"DMRELAY_KEY": "k", "PROFILE": "p", "CHAT": "c"})
    printed = set(re.findall(r"(\w+)=", line))
    used = set(re.findall(r"\$([A-Z_]+)", _block("Try it", "sh"))) - {"MESSAGE"}
    assert used <= printed
