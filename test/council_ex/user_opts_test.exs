defmodule CouncilEx.UserOptsTest do
  # A run's :user_opts: handed whole to its Elixir-module members (SPEC §3:
  # user_opts belong to the run), and read by the run itself for the
  # verbose tracer (verbose:), the retry policy (retry:) and the member
  # timeout (member_timeout_ms:), under a member's own options and over
  # the council's limits and config :council_ex, :default_retry.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import ExUnit.CaptureLog
  alias CouncilEx.Spec
  alias CouncilEx.Test.UserOptsCouncil

  test "a member module gets the run's user_opts as given, any term" do
    opts = %{model: "gpt-x", temperature: 0.2, tags: [:a, {:b, 1}], self: self()}
    assert {:ok, %{final: final}} = CouncilEx.run(UserOptsCouncil, "q", user_opts: opts)
    assert final == inspect(opts)
  end

  test "no user_opts: the member sees [], the whole list otherwise" do
    assert {:ok, %{final: "[]"}} = CouncilEx.run(UserOptsCouncil, "q")
    opts = [verbose: false, retry: {2, 0}, member_timeout_ms: 5_000, mine: :kept]
    assert {:ok, %{final: final}} = CouncilEx.run(UserOptsCouncil, "q", user_opts: opts)
    assert final == inspect(opts)
  end

  # ------------------------------------------------------------- verbose

  # The tracers alive now (they end after their run's terminal event).
  defp tracers do
    for pid <- Process.list(),
        match?({CouncilEx.Verbose, :init, _}, :proc_lib.initial_call(pid)),
        do: pid
  end

  defp wait_tracers_gone do
    for pid <- tracers() do
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, _}
    end
  end

  defp council(members, rounds, limits \\ %{}) do
    Spec.new!(id: "user-opts", members: members, rounds: rounds, limits: limits)
  end

  test "verbose: true logs each step of the run through Logger, from its first event" do
    spec =
      council(
        [[id: :a, provider: :mock, chunks: 2], [id: :b, provider: :mock, fail_attempts: [1]]],
        [[type: :independent_analysis], [type: :vote]]
      )

    log =
      capture_log([level: :info], fn ->
        assert {:ok, _} = CouncilEx.run(spec, "q", run_id: "verbose-1", verbose: true)
        wait_tracers_gone()
      end)

    lines = log |> String.split("\n") |> Enum.filter(&(&1 =~ "[council_ex verbose-1]"))

    for expected <- [
          "run started: user-opts",
          "round 0 independent_analysis started",
          "independent_analysis/a started",
          "independent_analysis/a ok (attempts 1)",
          "independent_analysis/b error (attempts 1): mock failure on attempt 1",
          "round 1 vote completed {",
          "run completed"
        ] do
      assert Enum.any?(lines, &(&1 =~ expected)), "no #{inspect(expected)} in:\n#{log}"
    end

    # true leaves the streamed chunks out; :debug (here from user_opts) shows them
    refute log =~ "token"

    log =
      capture_log([level: :info], fn ->
        assert {:ok, _} =
                 CouncilEx.run(spec, "q", run_id: "verbose-2", user_opts: [verbose: :debug])

        wait_tracers_gone()
      end)

    assert log =~ "[council_ex verbose-2]   independent_analysis/a token"
    assert log =~ "[council_ex verbose-2] run completed: "
  end

  test "verbose_io writes the lines to a device; a failed start leaves no tracer" do
    {:ok, io} = StringIO.open("")
    spec = council([[id: :a, provider: :mock]], [[type: :independent_analysis]])
    {:ok, pid} = CouncilEx.start(spec, "q", run_id: "verbose-io", verbose: true, verbose_io: io)
    assert {:ok, _} = CouncilEx.await(pid)
    wait_tracers_gone()
    {_, out} = StringIO.contents(io)
    assert out =~ "[council_ex verbose-io] run started"
    assert out =~ "[council_ex verbose-io] run completed"

    # a direct RunServer start, verbose from its user_opts
    {:ok, io} = StringIO.open("")

    {:ok, pid} =
      CouncilEx.RunServer.start(
        run_id: "verbose-rs",
        council: "user-opts",
        spec: spec,
        input: "q",
        user_opts: [verbose: true],
        verbose_io: io
      )

    assert {:ok, _} = CouncilEx.await(pid)
    wait_tracers_gone()
    {_, out} = StringIO.contents(io)
    assert out =~ "[council_ex verbose-rs] run started"
    assert out =~ "[council_ex verbose-rs] run completed"

    # refused starts (a taken run id, an invalid council) end their tracers
    {:ok, running} =
      CouncilEx.start(%{spec | members: [%{hd(spec.members) | options: %{"latency_ms" => 60_000}}]},
        "q", run_id: "verbose-taken")

    assert {:error, {:already_started, ^running}} =
             CouncilEx.start(spec, "q", run_id: "verbose-taken", verbose: true)

    CouncilEx.cancel(running)

    bad = %{spec | chair: "nobody"}
    assert {:error, {:invalid_council, _}} = CouncilEx.start(bad, "q", verbose: true)
    wait_tracers_gone()

    assert_raise ArgumentError, ~r/:verbose must be/, fn ->
      CouncilEx.start(spec, "q", verbose: :loud)
    end
  end

  # --------------------------------------------------------------- retries

  defp attempts(result, member) do
    [round] = result.rounds
    m = Enum.find(round.members, &(&1.member_id == member))
    {m.status, m.attempts}
  end

  test "retry: in user_opts, a member's own retry:, config :default_retry, the built-in" do
    # b fails its first two attempts (transient failures)
    members = [[id: :a, provider: :mock], [id: :b, provider: :mock, fail_attempts: [1, 2]]]
    spec = council(members, [[type: :independent_analysis]])

    # the built-in: one attempt
    assert {:ok, r} = CouncilEx.run(spec, "q")
    assert attempts(r, "b") == {:error, 1}

    # the run's option
    assert {:ok, r} = CouncilEx.run(spec, "q", user_opts: [retry: {3, 0}])
    assert attempts(r, "b") == {:ok, 3}

    # the application's default, when neither the run nor the council says
    Application.put_env(:council_ex, :default_retry, {2, 0})

    try do
      assert {:ok, r} = CouncilEx.run(spec, "q")
      assert attempts(r, "b") == {:error, 2}
      # the council's limits win over it
      limited = council(members, [[type: :independent_analysis]], %{max_attempts: 3})
      assert {:ok, r} = CouncilEx.run(limited, "q")
      assert attempts(r, "b") == {:ok, 3}
    after
      Application.delete_env(:council_ex, :default_retry)
    end

    # a member's own retry: wins over the run's
    own = [[id: :a, provider: :mock], [id: :b, provider: :mock, fail_attempts: [1, 2], retry: {1, 0}]]
    assert {:ok, r} = CouncilEx.run(council(own, [[type: :independent_analysis]]), "q", user_opts: [retry: {3, 0}])
    assert attempts(r, "b") == {:error, 1}

    assert_raise ArgumentError, ~r/retry must be/, fn ->
      CouncilEx.start(spec, "q", user_opts: [retry: 3])
    end
  end

  test "member_timeout_ms in user_opts bounds each attempt" do
    # b's first attempt never answers: with a short member timeout and two
    # attempts, the second answers
    members = [[id: :a, provider: :mock], [id: :b, provider: :mock, hang_attempts: [1]]]
    spec = council(members, [[type: :independent_analysis]])

    assert {:ok, r} =
             CouncilEx.run(spec, "q", user_opts: [member_timeout_ms: 100, retry: {2, 0}])

    assert attempts(r, "b") == {:ok, 2}
  end
end
