defmodule CouncilEx.NifOutboxTest do
  # The NIF's outbox (c_src/nif/nif_outbox.c): what the core's thread sends
  # goes through a FIFO that CouncilEx.Nif.Pump sends from on its
  # scheduler. Every request is queued here ({:inline, false}), so the
  # runs are driven by the core's thread and their events take that way.
  # Not async: the pump is one per VM and one test kills it.
  use ExUnit.Case, async: false
  @moduletag :nif_only

  alias CouncilEx.Nif
  import CouncilEx.Test.Helpers, only: [eventually: 1]

  @tokens 1000
  @runs 4
  @subs 10

  # a member that streams @tokens numbered chunks at once ("0000" ..)
  defp spec do
    answer = Enum.map_join(0..(@tokens - 1), &String.pad_leading(Integer.to_string(&1), 4, "0"))

    ~s({"id":"burst","members":[{"id":"a","provider":"mock","options":{"latency_ms":0,) <>
      ~s("chunks":#{@tokens},"answer":"#{answer}"}}],"rounds":[{"type":"independent_analysis"}]})
  end

  # a subscriber that keeps what it gets, in order, until the terminal
  # events of `runs` runs, then sends it to the parent
  defp subscriber(parent, runs) do
    spawn_link(fn -> collect(parent, runs, []) end)
  end

  defp collect(parent, 0, acc), do: send(parent, {:got, self(), Enum.reverse(acc)})

  defp collect(parent, runs, acc) do
    receive do
      {:run_completed, _, _} = e -> collect(parent, runs - 1, [e | acc])
      e -> collect(parent, runs, [e | acc])
    after
      20_000 -> send(parent, {:got, self(), {:timeout, length(acc)}})
    end
  end

  # each subscriber got each run's events whole and in order: run_started
  # first, the chunks 0000.. in order, run_completed last
  defp assert_complete(subs) do
    for s <- subs do
      assert_receive {:got, ^s, evs}, 30_000
      assert is_list(evs), "subscriber #{inspect(s)}: #{inspect(evs)}"

      by_run = Enum.group_by(evs, &elem(&1, 1))
      assert map_size(by_run) == @runs

      for {_id, run_evs} <- by_run do
        assert [{:run_started, _, _, _} | _] = run_evs
        assert {:run_completed, _, _} = List.last(run_evs)
        chunks = for {:member_token, _, _, "a", c} <- run_evs, do: c
        assert chunks == Enum.map(0..(@tokens - 1), &String.pad_leading("#{&1}", 4, "0"))
        assert length(run_evs) == @tokens + 6
      end
    end
  end

  defp burst(f \\ fn -> :ok end) do
    me = self()
    subs = for _ <- 1..@subs, do: subscriber(me, @runs)
    :ok = Nif.call({:inline, false})

    try do
      for _ <- 1..@runs, do: {:ok, _} = Nif.start(%{spec: spec(), input: "q", subscribe: subs})
      f.()
    after
      Nif.call({:inline, true})
    end

    assert_complete(subs)
  end

  defp reductions(pid), do: elem(Process.info(pid, :reductions), 1)

  setup do
    # the application's open gave the pump; a test that killed it gets a
    # new one from the next open (an open of an open context keeps it)
    :ok = Nif.call({:open, %{}})
    pump = Process.whereis(CouncilEx.Nif.Pump)
    assert is_pid(pump)
    eventually(fn -> match?({:ok, %{runs_alive: 0}}, Nif.call(:stats)) end)
    %{pump: pump}
  end

  test "the core's thread's events reach 10 subscribers through the pump, whole and in order",
       %{pump: pump} do
    r0 = reductions(pump)
    burst()
    # the pump sent them: it ran (an idle pump does not)
    assert reductions(pump) > r0
  end

  test "a pump killed during a burst: the core's thread sends the rest itself, in order; the next open gives a new pump",
       %{pump: pump} do
    ref = Process.monitor(pump)
    burst(fn -> Process.exit(pump, :kill) end)
    assert_receive {:DOWN, ^ref, :process, ^pump, :killed}

    # no pump: the core's thread sends, nothing waits for a pump
    burst()

    :ok = Nif.call({:open, %{}})
    new = Process.whereis(CouncilEx.Nif.Pump)
    assert is_pid(new) and new != pump
    r0 = reductions(new)
    burst()
    assert reductions(new) > r0
  end
end
