# Handlers attach through :telemetry, or, where the real application is
# absent (as where this suite was written), through the test stand-in of
# its API in test/support/telemetry_stand_in.ex.
defmodule CouncilEx.TelemetryTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import ExUnit.CaptureLog
  import CouncilEx.Test.Helpers
  alias CouncilEx.Telemetry

  @handler "council-ex-telemetry-test"

  setup do
    true = Telemetry.refresh()
    on_exit(fn -> :telemetry.detach(@handler) end)
    :ok
  end

  defp attach do
    me = self()

    :ok =
      :telemetry.attach_many(
        @handler,
        Telemetry.events(),
        fn event, m, md, _ -> send(me, {:telemetry, event, m, md}) end,
        nil
      )
  end

  # The telemetry events of one run, in order, up to its run stop or
  # exception.
  defp events_of(run_id, acc \\ []) do
    receive do
      {:telemetry, [:council_ex, :run, last] = e, m, %{run_id: ^run_id} = md}
      when last in [:stop, :exception] ->
        Enum.reverse([{e, m, md} | acc])

      {:telemetry, e, m, %{run_id: ^run_id} = md} ->
        events_of(run_id, [{e, m, md} | acc])
    after
      10_000 -> flunk("no run stop; got #{inspect(Enum.reverse(acc))}")
    end
  end

  defp names(events), do: Enum.map(events, fn {e, _, _} -> e end)

  test "without a handler (and no config) nothing is subscribed and nothing emitted" do
    refute Telemetry.enabled?()
    {:ok, _} = CouncilEx.run(CouncilEx.Test.MockCouncil, "q")
    assert :sys.get_state(CouncilEx.Telemetry.Forwarder) == %{}
    refute_received {:telemetry, _, _, _}
  end

  test "every run, round, member and provider request event, with measurements and metadata" do
    attach()
    assert Telemetry.enabled?()
    id = run_id()
    {:ok, result} = CouncilEx.run(CouncilEx.Test.MockCouncil, "q", run_id: id)
    events = events_of(id)
    n = names(events)

    assert hd(n) == [:council_ex, :run, :start]
    assert List.last(n) == [:council_ex, :run, :stop]
    # three rounds and the chair's, three members in each but the chair's
    assert Enum.count(n, &(&1 == [:council_ex, :round, :start])) == 4
    assert Enum.count(n, &(&1 == [:council_ex, :round, :stop])) == 4
    assert Enum.count(n, &(&1 == [:council_ex, :member, :start])) == 10
    assert Enum.count(n, &(&1 == [:council_ex, :member, :stop])) == 10
    assert Enum.count(n, &(&1 == [:council_ex, :provider, :request, :start])) == 10
    assert Enum.count(n, &(&1 == [:council_ex, :provider, :request, :stop])) == 10
    refute Enum.any?(n, &(List.last(&1) == :exception))

    {_, m, md} = List.last(events)
    assert %{run_id: ^id, council: CouncilEx.Test.MockCouncil, status: :completed} = md
    assert m.duration == System.convert_time_unit(result.duration_us, :microsecond, :native)
    assert m.input_tokens == result.usage.input_tokens
    assert m.output_tokens == result.usage.output_tokens

    {_, start_m, _} = hd(events)
    assert is_integer(start_m.system_time) and is_integer(start_m.monotonic_time)

    # a member's stop: the core's timings and tokens, the member's metadata
    vote = Enum.find(result.rounds, &(&1.name == :vote))
    beta = Enum.find(vote.members, &(&1.member_id == "beta"))

    [{_, mm, mmd}] =
      for {[:council_ex, :member, :stop], _, %{member_id: "beta", round_name: :vote}} = e <-
            events,
          do: e

    assert mm.duration == System.convert_time_unit(beta.duration_us, :microsecond, :native)
    assert mm.input_tokens == beta.usage.input_tokens
    assert mm.output_tokens == beta.usage.output_tokens

    assert %{
             run_id: ^id,
             round_name: :vote,
             round_idx: 2,
             provider: :mock,
             model: nil,
             member_module: nil,
             status: :ok,
             attempts: 1,
             confidence: nil
           } = mmd

    [{_, pm, _}] =
      for {[:council_ex, :provider, :request, :stop], _, %{member_id: "beta", round_name: :vote}} =
            e <- events,
          do: e

    assert pm.duration == System.convert_time_unit(beta.provider_us, :microsecond, :native)

    [{_, rm, rmd}] =
      for {[:council_ex, :round, :stop], _, %{round_name: :vote}} = e <- events, do: e

    assert rm.duration == System.convert_time_unit(vote.duration_us, :microsecond, :native)
    assert %{round_idx: 2, status: :ok} = rmd
  end

  test "a failed run: the member's stop says error, what was cut short gets exceptions" do
    attach()

    spec =
      CouncilEx.Spec.new!(
        id: "failing",
        members: [[id: "boom", provider: CouncilEx.Test.RaisingMember]],
        rounds: [[type: :independent_analysis]]
      )

    id = run_id()
    {:error, {:failed, errors, _}} = CouncilEx.run(spec, "q", run_id: id)
    events = events_of(id)

    assert [{_, _, %{status: :error, member_module: CouncilEx.Test.RaisingMember}}] =
             for({[:council_ex, :member, :stop], _, _} = e <- events, do: e)

    assert [{_, %{duration: d}, %{kind: :error, reason: reason}}] =
             for({[:council_ex, :provider, :request, :exception], _, _} = e <- events, do: e)

    assert is_integer(d)
    assert %CouncilEx.Error{message: "member exploded"} = reason

    assert [{_, _, %{reason: :run_failed}}] =
             for({[:council_ex, :round, :exception], _, _} = e <- events, do: e)

    assert {[:council_ex, :run, :exception], _, %{kind: :error, reason: ^errors}} =
             List.last(events)
  end

  test "a round its router skips: a round stop with status :skipped, no member events" do
    attach()

    spec =
      CouncilEx.Spec.new!(
        id: "routed",
        members: [[id: "a", provider: :mock], [id: "b", provider: :mock]],
        rounds: [
          [type: :independent_analysis, router: [rules: [[members: ["a"]]]]],
          [type: :peer_review, router: [rules: [[members: []]]]]
        ]
      )

    id = run_id()
    {:ok, _} = CouncilEx.run(spec, "q", run_id: id)
    events = events_of(id)

    assert [{_, _, %{status: :ok}}, {_, _, %{status: :skipped, round_name: :peer_review}}] =
             for({[:council_ex, :round, :stop], _, _} = e <- events, do: e)

    # only a, in the first round, was started
    assert [%{member_id: "a", round_name: :independent_analysis}] =
             for({[:council_ex, :member, :start], _, md} <- events, do: md)

    assert [%{member_id: "a", status: :ok}] =
             for({[:council_ex, :member, :stop], _, md} <- events, do: md)
  end

  test "an overflow notice keeps the run: its terminal event still gives the run's stop, and what was open ends with :overflow" do
    attach()
    id = run_id()
    {:ok, pid} = CouncilEx.start(gated_council(), "q", run_id: id)
    # the forwarder has the gate member open (its start is emitted)
    assert_receive {:telemetry, [:council_ex, :member, :start], _, %{run_id: ^id, member_id: "gate"}},
                   10_000

    # cut off as the node or the NIF would cut it: only the terminal
    # event follows (here the others still come, and are not counted)
    send(CouncilEx.Telemetry.Forwarder, {:council_ex_overflow, "council_ex:run:" <> id, 3})
    :ok = open_gate()
    {:ok, _} = CouncilEx.await(pid)
    events = events_of(id)

    assert {[:council_ex, :run, :stop], _, %{status: :completed}} = List.last(events)
    assert [%{reason: :overflow}] = for({[:council_ex, :round, :exception], _, md} <- events, do: md)

    # the gate member, and any mock member still at work when the notice
    # came, end with :overflow; none of them also gets a stop
    cut = for {[:council_ex, :member, :exception], _, md} <- events, do: md
    assert "gate" in Enum.map(cut, & &1.member_id)
    assert Enum.all?(cut, &(&1.reason == :overflow))
    stopped = for {[:council_ex, :member, :stop], _, md} <- events, do: md.member_id
    assert Enum.all?(cut, &(&1.member_id not in stopped))
    refute Enum.any?(events, &match?({[:council_ex, :round, :stop], _, _}, &1))
    # and it is forgotten
    refute Map.has_key?(:sys.get_state(CouncilEx.Telemetry.Forwarder), id)
  end

  test "attach_default_logger/1 logs the events through Logger" do
    :ok = Telemetry.attach_default_logger(level: :info, events: [:run])
    on_exit(&Telemetry.detach_default_logger/0)
    id = run_id()

    log =
      capture_log(fn ->
        {:ok, _} = CouncilEx.run(CouncilEx.Test.MockCouncil, "q", run_id: id)
        # the forwarder has handled the run's last event once it answers
        eventually(fn -> :sys.get_state(CouncilEx.Telemetry.Forwarder) == %{} end, 200, 10)
      end)

    assert log =~ "[council_ex.run.start] run=#{id}"
    assert log =~ "[council_ex.run.stop] run=#{id}"
    assert log =~ "status=:completed"
    refute log =~ "council_ex.member"
  end
end
