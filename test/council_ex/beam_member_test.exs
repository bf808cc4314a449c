defmodule CouncilEx.BeamMemberTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.Test.BeamCouncil

  test "Elixir-module members answer through the beam provider; a raise is a member error" do
    id = run_id()
    {:ok, _} = CouncilEx.start(BeamCouncil, "hello", run_id: id, subscribe: true)
    events = collect_events(id)
    assert is_list(events), "no terminal event: #{inspect(events)}"

    tokens = for {:member_token, _, _, "echo", chunk} <- events, do: chunk
    assert tokens == ["echo ", "says"]

    results =
      for {:member_completed, _, :independent_analysis, m, r} <- events, into: %{}, do: {m, r}

    assert %{status: :ok, text: "echo: \"hello\""} = results["echo"]
    assert %{status: :error, error: error, attempts: 1} = results["boom"]

    assert %CouncilEx.Error{kind: :transient, member_id: "boom", round_name: :independent_analysis} =
             error

    assert to_string(error) =~ "member exploded"
    assert error.context == %{status: :error, attempts: 1}
    assert %{status: :ok} = results["mock"]
    assert {:run_completed, ^id, _} = List.last(events)
  end

  # Maps of more than 32 pairs built off the VM's schedulers crash OTP 25
  # (erlang/otp#8208): the NIF's loop thread builds them pair by pair. An
  # input, user_opts and a member's request that hold such maps.
  test "inputs and user_opts holding large maps reach members and events whole" do
    id = run_id()
    input = %{question: "q", table: Map.new(1..500, &{&1, "row #{&1}"})}
    opts = [weights: Map.new(1..100, &{"k#{&1}", &1})]

    {:ok, _} =
      CouncilEx.start(CouncilEx.Test.UserOptsCouncil, input,
        run_id: id,
        subscribe: true,
        user_opts: opts
      )

    events = collect_events(id)
    assert [{:run_started, ^id, _, ^input} | _] = events
    assert {:run_completed, ^id, %{final: final}} = List.last(events)
    assert final == inspect(opts)
  end
end

