defmodule CouncilEx.PubSubTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub
  alias CouncilEx.PubSub.Relay
  alias CouncilEx.Test.SlowCouncil

  defp stats, do: GenServer.call({:council_ex, CouncilEx.node()}, :stats)

  test "subscribe/1 by run id or topic; unsubscribe/1 stops delivery" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    assert :ok = PubSub.subscribe(id)
    assert :ok = PubSub.unsubscribe("council_ex:run:" <> id)
    assert :ok = PubSub.subscribe("council_ex:run:" <> id)
    CouncilEx.cancel(pid)
    assert_receive {:run_cancelled, ^id, %{}}, 5_000
    PubSub.unsubscribe(id)
  end

  test "the relay subscribes once per topic however many local subscribers" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    {:ok, %{subscriptions: before}} = stats()
    parent = self()

    subs =
      for _ <- 1..5 do
        spawn_link(fn ->
          :ok = PubSub.subscribe(id)
          send(parent, :subscribed)
          receive do: ({:run_cancelled, ^id, _} -> send(parent, {:got, self()}))
        end)
      end

    for _ <- subs, do: assert_receive(:subscribed, 5_000)
    assert {:ok, %{subscriptions: after_}} = stats()
    assert after_ == before + 1
    CouncilEx.cancel(pid)
    for s <- subs, do: assert_receive({:got, ^s}, 5_000)
  end

  test "the relay leaves the C node when its last local subscriber exits" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    {:ok, %{subscriptions: before}} = stats()

    sub =
      spawn(fn ->
        PubSub.subscribe(id)
        receive do: (:stop -> :ok)
      end)

    eventually(fn -> Relay.subscribers("council_ex:run:" <> id) == [sub] end)
    expected = before + 1
    eventually(fn -> match?({:ok, %{subscriptions: ^expected}}, stats()) end)
    send(sub, :stop)
    eventually(fn -> Relay.subscribers("council_ex:run:" <> id) == [] end)
    eventually(fn -> match?({:ok, %{subscriptions: ^before}}, stats()) end)
    CouncilEx.cancel(pid)
  end

  test "a sub-council's events reach subscribers of its topic" do
    id = run_id()
    :ok = PubSub.subscribe("council_ex:run:" <> id <> ":sub:panel")
    {:ok, _} = CouncilEx.start(CouncilEx.Test.ParentCouncil, "q", run_id: id, subscribe: true)
    events = collect_events(id)
    assert is_list(events), "no terminal event: #{inspect(events)}"
    assert {:run_completed, ^id, _} = List.last(events)

    sub_events = receive_all([])
    assert Enum.any?(sub_events, &match?({:run_started, _, _, _}, &1))
    assert Enum.any?(sub_events, &match?({:run_completed, _, _}, &1))
  end

  defp receive_all(acc) do
    receive do
      ev when is_tuple(ev) -> receive_all([ev | acc])
    after
      500 -> Enum.reverse(acc)
    end
  end
end
