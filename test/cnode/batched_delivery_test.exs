# Batched delivery ({:subscribe, topic, pid, :batched}, docs/protocol.md):
# the lists, taken in order, are exactly the events a plain subscriber gets.
Code.require_file("support.exs", __DIR__)

defmodule CNode.BatchedDeliveryTest do
  use ExUnit.Case, async: false
  import CNodeTest

  setup_all do
    module_node()
  end

  @terminal [:run_completed, :run_failed, :run_cancelled]

  # 3 members streaming 300 tokens each, all at once (latency 0)
  @spec_map %{id: "b",
              members: for(m <- 1..3, do: %{id: "m#{m}", provider: "mock",
                                            options: %{latency_ms: 0, chunks: 300,
                                                       text: String.duplicate("xy", 300)}}),
              rounds: [%{type: "independent_analysis"}, %{type: "synthesis"}]}

  # Forwards what it gets to the test process, tagged with its name.
  defp forwarder(name) do
    me = self()
    spawn_link(fn -> forward(me, name) end)
  end

  defp forward(to, name) do
    receive do
      msg -> send(to, {name, msg}); forward(to, name)
    end
  end

  defp plain_events(acc \\ []) do
    receive do
      {:plain, e} when elem(e, 0) in @terminal -> Enum.reverse([e | acc])
      {:plain, e} -> plain_events([e | acc])
    after
      30_000 -> flunk("plain: no terminal event after #{length(acc)}")
    end
  end

  defp batches(topic, id, acc \\ []) do
    receive do
      {:batched, {:council_ex_events, ^topic, evs}} ->
        assert evs != []
        acc = [evs | acc]
        if Enum.any?(evs, &(elem(&1, 0) in @terminal and elem(&1, 1) == id)),
          do: Enum.reverse(acc),
          else: batches(topic, id, acc)
    after
      30_000 -> flunk("batched: no terminal event after #{length(acc)} batches")
    end
  end

  test "the batches, in order, are the plain subscriber's events", %{info: i} do
    id = "batch-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> id
    plain = forwarder(:plain)
    batched = forwarder(:batched)
    assert :ok = GenServer.call({:council_ex, i.node}, {:subscribe, topic, batched, :batched})
    assert {:ok, _} =
             GenServer.call({:council_ex, i.node},
                            {:start, %{input: "q", spec: @spec_map, run_id: id, subscribe: [plain]}})
    plain_evs = plain_events()
    got = batches(topic, id)
    assert List.flatten(got) == plain_evs
    assert List.last(plain_evs) |> elem(0) == :run_completed
    # a turn's tokens travel together: fewer messages than events
    assert length(got) < length(plain_evs)
    # the batched subscription ended with the run, as a plain one does
    assert wait_until(fn -> stats(i.node).subscriptions == 0 end)
  end

  test "batched is accepted in a start's :subscribe list; other atoms are refused", %{info: i} do
    id = "batch-#{System.unique_integer([:positive])}"
    batched = forwarder(:batched)
    assert {:ok, _} =
             GenServer.call({:council_ex, i.node},
                            {:start, %{input: "q", spec: @spec_map, run_id: id,
                                       subscribe: [{batched, :batched}]}})
    got = batches("council_ex:run:" <> id, id)
    assert {:run_started, ^id, "b", "q"} = got |> List.flatten() |> hd()
    assert {:error, {:bad_option, :subscribe}} =
             GenServer.call({:council_ex, i.node},
                            {:start, %{input: "q", spec: @spec_map, subscribe: [{batched, :bundled}]}})
    assert {:error, :badarg} =
             GenServer.call({:council_ex, i.node}, {:subscribe, "council_ex:run:x", batched, :bundled})
  end
end
