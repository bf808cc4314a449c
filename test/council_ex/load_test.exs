defmodule CouncilEx.LoadTest do
  use ExUnit.Case, async: false
  @moduletag :cnode
  @moduletag timeout: 300_000

  alias CouncilEx.Test.QuickCouncil

  @runs 1_000

  test "#{@runs} concurrent runs with subscribers all complete, no event lost" do
    results =
      1..@runs
      |> Task.async_stream(
        fn i ->
          id = "load-#{i}-#{System.unique_integer([:positive])}"
          {:ok, _pid} = CouncilEx.start(QuickCouncil, i, run_id: id, subscribe: true)
          {id, CouncilEx.Test.Helpers.collect_events(id, 60_000)}
        end,
        max_concurrency: @runs,
        timeout: 120_000
      )
      |> Enum.map(fn {:ok, r} -> r end)

    for {id, events} <- results do
      assert is_list(events), "run #{id} had no terminal event: #{inspect(events)}"
      tags = Enum.map(events, &elem(&1, 0))
      assert hd(tags) == :run_started
      assert List.last(tags) == :run_completed
      assert Enum.count(tags, &(&1 == :round_started)) == 1
      assert Enum.count(tags, &(&1 == :member_started)) == 2
      assert Enum.count(tags, &(&1 == :member_completed)) == 2
      assert Enum.count(tags, &(&1 == :round_completed)) == 1

      completed = for {:member_completed, _, _, m, %{text: t}} <- events, into: %{}, do: {m, t}
      tokens = for {:member_token, _, _, "a", c} <- events, do: c
      assert tokens != [] and Enum.join(tokens) == completed["a"]
    end

    # Every local subscription is gone once the subscribers are (task processes exited).
    CouncilEx.Test.Helpers.eventually(fn -> CouncilEx.Test.Backend.local_subscriptions() == 0 end)
  end
end
