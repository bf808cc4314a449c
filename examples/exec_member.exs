# An `exec` member: the C node runs a program per member call, writes the
# request (JSON: run_id, member_id, round, attempt, input, answers, ...) on
# its stdin and streams its stdout back as the answer. Any command-line LLM
# tool plugs in the same way, e.g.
#
#   member :gpt, provider: :exec,
#     argv: ["sh", "-c", "jq -r .input | llm -m gpt-4o-mini"], timeout_ms: 60_000
#
# Here a plain shell command stands in for the model, next to a mock member.
#
#   MIX_ENV=dev mix run examples/exec_member.exs

defmodule Example.ExecCouncil do
  use CouncilEx

  member :shell,
    provider: :exec,
    argv: [
      "sh",
      "-c",
      ~S|req=$(cat); printf 'shell saw a %d-byte request from %s\n' "${#req}" "$(hostname)"|
    ],
    timeout_ms: 5_000

  member :mock, provider: :mock, latency_ms: 100, chunks: 2

  round :independent_analysis
  round :vote
  chair :mock
end

# exec is opt-in (README "Trust model"): an application allows its
# programs in its configuration, `config :council_ex, exec_allow:
# ["/bin/sh"]`; this script, started by `mix run`, sets it and restarts
# the library so that its node (or the NIF) gets the list.
:ok = Application.stop(:council_ex)
Application.put_env(:council_ex, :exec_allow, [System.find_executable("sh")])
{:ok, _} = Application.ensure_all_started(:council_ex)
{:ok, _node} = CouncilEx.Node.await(30_000)
{:ok, pid} = CouncilEx.start(Example.ExecCouncil, "What is the host called?", subscribe: true)
run_id = CouncilEx.RunServer.run_id(pid)

print = fn print ->
  receive do
    {:member_completed, ^run_id, round, "shell", result} ->
      # In the vote round the shell's text is no ballot ("VOTE: <label>"):
      # that is a member error, counted, and the run goes on.
      IO.puts(
        "#{round}: shell #{result.status} -> #{inspect(result.text)}#{if result.error, do: " (#{result.error})", else: ""}"
      )

      print.(print)

    {:run_completed, ^run_id, result} ->
      IO.puts("final: #{result.final}")

    {:run_failed, ^run_id, errors, _} ->
      IO.puts("failed: #{Enum.join(errors, "; ")}")

    _other ->
      print.(print)
  after
    30_000 -> IO.puts("no result")
  end
end

print.(print)
