# A live council run through the Elixir library (`make demo`).
#
# Three mock members (each with its own latency, streaming its answer in
# chunks) go through independent analysis, an anonymized peer review and a
# vote; the chair then synthesises the final answer. The library starts the
# C node (priv/council_node) itself; every event is printed as it arrives.
#
#   MIX_ENV=dev mix run examples/demo.exs ["your question"]

defmodule Demo.Council do
  use CouncilEx

  member :ada, provider: :mock, latency_ms: 450, chunks: 4
  member :grace, provider: :mock, latency_ms: 800, chunks: 3, vote: "C"
  member :linus, provider: :mock, latency_ms: 250, chunks: 5

  round :independent_analysis
  round :anonymized_peer_review
  round :vote
  chair :ada

  limits member_timeout_ms: 10_000, max_attempts: 2, backoff_ms: 50
end

defmodule Demo.ANSI do
  @moduledoc false
  # Colours only on a terminal.
  @on match?({:ok, _}, :io.columns())
  for name <- [:cyan, :magenta, :yellow, :red, :green, :bright, :faint, :reset] do
    def unquote(name)(), do: if(@on, do: apply(IO.ANSI, unquote(name), []), else: "")
  end
end

defmodule Demo.Printer do
  @moduledoc false
  alias Demo.ANSI

  defp colors, do: %{"ada" => ANSI.cyan(), "grace" => ANSI.magenta(), "linus" => ANSI.yellow()}

  def loop(run_id, t0) do
    receive do
      {:run_started, ^run_id, council, input} ->
        say(t0, "run #{run_id} of #{inspect(council)} started on #{inspect(input)}")
        loop(run_id, t0)

      {:round_started, ^run_id, round, idx} ->
        say(t0, ANSI.bright() <> "round #{idx + 1}: #{round}" <> ANSI.reset())
        loop(run_id, t0)

      {:member_started, ^run_id, _round, member} ->
        say(t0, "  #{who(member)} is thinking")
        loop(run_id, t0)

      {:member_token, ^run_id, _round, member, chunk} ->
        say(t0, "  #{who(member)} #{ANSI.faint()}▸#{ANSI.reset()} #{inspect(chunk)}")
        loop(run_id, t0)

      {:member_completed, ^run_id, _round, member, %{status: :ok, attempts: n}} ->
        say(t0, "  #{who(member)} done#{if n > 1, do: " after #{n} attempts", else: ""}")
        loop(run_id, t0)

      {:member_completed, ^run_id, _round, member, %{error: error}} ->
        say(t0, "  #{who(member)} #{ANSI.red()}failed: #{error}#{ANSI.reset()}")
        loop(run_id, t0)

      {:round_completed, ^run_id, round, %{aggregate: %{"tally" => tally} = agg}} ->
        votes = tally |> Enum.sort() |> Enum.map_join(", ", fn {label, n} -> "#{label}: #{n}" end)
        say(t0, "  vote tally #{votes} -> winner #{agg["winner"]} (#{agg["winner_member"]})")
        say(t0, "round #{round} complete")
        loop(run_id, t0)

      {:round_completed, ^run_id, round, _result} ->
        say(t0, "round #{round} complete")
        loop(run_id, t0)

      {:run_completed, ^run_id, result} ->
        say(t0, ANSI.green() <> "run completed" <> ANSI.reset())
        {:ok, result}

      {:run_failed, ^run_id, errors, result} ->
        say(t0, ANSI.red() <> "run failed: #{Enum.join(errors, "; ")}" <> ANSI.reset())
        {:error, result}

      {:run_cancelled, ^run_id, result} ->
        say(t0, "run cancelled")
        {:error, result}
    after
      30_000 -> {:error, :no_events}
    end
  end

  defp who(member),
    do: Map.get(colors(), member, "") <> String.pad_trailing(member, 5) <> ANSI.reset()

  defp say(t0, line) do
    ms = System.monotonic_time(:millisecond) - t0
    IO.puts("#{ANSI.faint()}#{:io_lib.format("~6.3f", [ms / 1000])}s#{ANSI.reset()} #{line}")
  end
end

question =
  case System.argv() do
    [] -> "Should a small team rewrite its monolith as microservices this year?"
    words -> Enum.join(words, " ")
  end

case CouncilEx.Node.await(30_000) do
  {:ok, node} ->
    how =
      if CouncilEx.Node.info().mode == :managed,
        do: "started and supervised by the library (#{CouncilEx.Node.executable()})",
        else: "(external, from config)"

    IO.puts("C node #{node} #{how}\n")

  {:error, reason} ->
    IO.puts(:stderr, "demo: the C node is not available (#{reason}); build it with `make all`")
    System.halt(1)
end

t0 = System.monotonic_time(:millisecond)

run_id = CouncilEx.generate_run_id()

case CouncilEx.start(Demo.Council, question, run_id: run_id, subscribe: true) do
  {:ok, _pid} ->
    case Demo.Printer.loop(run_id, t0) do
      {:ok, result} ->
        IO.puts("\n" <> Demo.ANSI.bright() <> "Final answer (chair: ada):" <> Demo.ANSI.reset())
        IO.puts(result.final)
        {:ok, summary} = CouncilEx.RunServer.state(run_id)

        IO.puts(
          "\n#{summary.rounds_completed} rounds, status #{summary.status}, started #{DateTime.to_iso8601(summary.started_at)}"
        )

      {:error, other} ->
        IO.puts(:stderr, "demo: the run did not complete: #{inspect(other, limit: 5)}")
        System.halt(1)
    end

  {:error, reason} ->
    IO.puts(:stderr, "demo: could not start the run: #{inspect(reason)}")
    System.halt(1)
end
