defmodule CouncilEx.MemberStatusTest do
  # Member results carry the original's statuses, as the core reports
  # them: :ok, :error, :timeout, :skipped, :invalid_output, :eliminated,
  # in round results and in member_completed events.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.Spec

  test "each status, in the result and in the member_completed events" do
    spec =
      Spec.new!(
        id: "statuses",
        members: [
          [id: :a, provider: :mock, vote: "C"],
          [id: :b, provider: :mock, fail_attempts: [1], vote: "C"],
          [id: :c, provider: :mock, vote: "C"],
          [id: :d, provider: :mock, hang_attempts: [1], timeout_ms: 50],
          [id: :e, provider: :mock, text: "no ballot here"]
        ],
        rounds: [
          [type: :independent_analysis, members: [:a, :b, :c, :d]],
          [type: :vote, members: [:a, :c, :e]],
          [type: :pairwise_elimination, members: [:a, :c]]
        ]
      )

    {:ok, pid} = CouncilEx.start(spec, "q", subscribe: true)
    run_id = CouncilEx.RunServer.run_id(pid)
    events = collect_events(run_id)
    assert {:run_completed, ^run_id, result} = List.last(events)

    statuses = fn name ->
      round = Enum.find(result.rounds, &(&1.name == name))
      Map.new(round.members, &{&1.member_id, &1.status})
    end

    assert statuses.(:independent_analysis) ==
             %{"a" => :ok, "b" => :error, "c" => :ok, "d" => :timeout, "e" => :skipped}

    assert statuses.(:vote) ==
             %{"a" => :ok, "c" => :ok, "e" => :invalid_output, "b" => :skipped, "d" => :skipped}

    # a and c answered; c's answer wins the match, a's is eliminated
    assert %{"a" => :eliminated, "c" => :ok} = statuses.(:pairwise_elimination)

    completed =
      for {:member_completed, _, round, member, %{status: status}} <- events,
          do: {round, member, status}

    assert {:independent_analysis, "e", :skipped} in completed
    assert {:independent_analysis, "d", :timeout} in completed
    assert {:vote, "e", :invalid_output} in completed
    assert {:pairwise_elimination, "a", :eliminated} in completed

    # a skipped member was never called
    skipped = Enum.find(hd(result.rounds).members, &(&1.member_id == "e"))
    assert %{attempts: 0, text: nil, error: nil, error_kind: nil} = skipped
  end
end
