defmodule CouncilEx.Test.Pool.Idle do
  @moduledoc "One mock member that takes ten minutes: a run that stays until cancelled."
  use CouncilEx

  member :a, provider: :mock, latency_ms: 600_000
  round :independent_analysis
  limits member_timeout_ms: 900_000
end

defmodule CouncilEx.PoolTest do
  # A pool of three managed C nodes (`config :council_ex, pool_size: 3`):
  # runs spread by rendezvous hashing, found by id from this VM and from a
  # second BEAM node (a :peer using the same pool as `nodes:`), a node
  # killed mid-run (only its runs are lost; new runs go to the others; it
  # comes back and takes its share again), least-loaded placement, drain,
  # and a node added at run time. The library goes back to its one managed
  # node afterwards.
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C nodes themselves (processes, distribution): node pass only
  @moduletag :cnode_only
  @moduletag :pool
  # several starts of the (ASan) C node, hundreds of runs
  @moduletag timeout: 600_000

  import CouncilEx.Test.Helpers
  alias CouncilEx.{Pool, RunServer}
  alias CouncilEx.Pool.Placement
  alias CouncilEx.Test.{QuickCouncil, SlowCouncil}

  setup_all do
    Application.put_env(:council_ex, :pool_size, 3)
    # the manager reads the configuration when it starts
    CouncilEx.Test.Backend.restart_backend()
    nodes = wait_pool(3)

    on_exit(fn ->
      Application.delete_env(:council_ex, :pool_size)
      CouncilEx.Test.Backend.restart_backend()
      wait_pool(1)
    end)

    %{nodes: nodes}
  end

  # ------------------------------------------------------------- helpers

  # The pool's nodes once `n` are up (the ASan build on a loaded machine:
  # up to 60 s).
  defp wait_pool(n) do
    eventually(fn -> length(Pool.view().up) == n and Pool.view().ready end, 1_200, 50)
    {:ok, _} = CouncilEx.Node.await()
    Pool.view().up
  end

  # Starts `count` runs of `council` with fresh ids: [{id, pid}].
  defp start_runs(count, council, prefix, opts \\ []) do
    1..count
    |> Task.async_stream(
      fn _ ->
        id = run_id(prefix)
        {:ok, pid} = CouncilEx.start(council, "q", [run_id: id] ++ opts)
        {id, pid}
      end,
      max_concurrency: 32,
      timeout: 60_000
    )
    |> Enum.map(fn {:ok, r} -> r end)
  end

  defp await_all(runs) do
    for {id, pid} <- runs, do: {id, CouncilEx.await(pid, 60_000)}
  end

  defp counts(runs), do: Enum.frequencies_by(runs, fn {_id, pid} -> node(pid) end)

  defp report(label, counts) do
    IO.puts("\n  pool: #{label}: " <> inspect(Enum.sort(counts)))
  end

  # `count` gated runs (see gated_council/0) whose ids rank `node` first
  # among `nodes`, each waiting at its gate: [{id, pid, gate member}].
  defp gated_on(node, nodes, count) do
    spec = gated_council()

    for _ <- 1..count do
      id = Placement.id_for(node, nodes, fn -> run_id("gated") end, 10_000)
      {:ok, pid} = CouncilEx.start(spec, "q", run_id: id)
      assert node(pid) == node
      member = receive(do: ({:gate_waiting, member} -> member), after: (30_000 -> flunk("no gate")))
      {id, pid, member}
    end
  end

  # A run that stays (Pool.Idle) under an id whose order is the first two
  # of `nodes`, placed on the second while the first drains; the first
  # takes runs again when this returns. {id, pid}
  defp placed_second([first, second | _] = nodes, prefix) do
    id =
      Stream.repeatedly(fn -> run_id(prefix) end)
      |> Enum.find(&(Enum.take(Placement.rank(&1, nodes), 2) == [first, second]))

    assert CouncilEx.Node.drain(first) == :ok
    {:ok, pid} = CouncilEx.start(CouncilEx.Test.Pool.Idle, "q", run_id: id)
    assert CouncilEx.Node.undrain(first) == :ok
    assert node(pid) == second
    {id, pid}
  end

  defp open_gates(gated), do: Enum.each(gated, fn {_, _, member} -> send(member, :gate_open) end)

  # A second BEAM node using the same C nodes (as `nodes:`), with the
  # library's code; stopped by the test that starts it.
  defp start_peer(nodes) do
    name = :"pool_peer_#{System.pid()}_#{System.unique_integer([:positive])}"
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, peer, peer_node} =
      :peer.start_link(%{
        name: name,
        wait_boot: 60_000,
        # its distribution listens on 127.0.0.1 only
        args:
          [
            ~c"-setcookie",
            Atom.to_charlist(Node.get_cookie()),
            ~c"-kernel",
            ~c"inet_dist_use_interface",
            ~c"{127,0,0,1}"
          ] ++ paths
      })

    # (its log is not captured: warnings and worse only)
    :ok = :erpc.call(peer_node, Application, :put_env, [:logger, :level, :warning])
    :ok = :erpc.call(peer_node, Application, :put_env, [:council_ex, :nodes, nodes])
    {:ok, _} = :erpc.call(peer_node, Application, :ensure_all_started, [:council_ex], 60_000)
    {:ok, _} = :erpc.call(peer_node, CouncilEx.Node, :await, [60_000], 70_000)
    {peer, peer_node}
  end

  # ---------------------------------------------------------------- tests

  test "300 runs spread over the 3 nodes by run id; each found by id, also from a second BEAM node",
       %{nodes: nodes} do
    runs = start_runs(300, QuickCouncil, "spread")
    counts = counts(runs)
    report("300 runs over 3 nodes", counts)
    assert Enum.sort(Map.keys(counts)) == Enum.sort(nodes)
    # every run on its id's first node: a lookup by id asks that one
    for {id, pid} <- runs, do: assert(node(pid) == Placement.owner(id, nodes))
    for {id, result} <- await_all(runs), do: assert(match?({:ok, %{final: _}}, result), id)

    # by id, finished (retained): state and await
    for {id, _pid} <- Enum.take_random(runs, 30) do
      assert {:ok, %{status: :completed, run_id: ^id}} = RunServer.state(id)
      assert {:ok, %{final: _}} = CouncilEx.await(id)
    end

    # a registry of its own spans the pool too: its own namespace, the same
    # placement
    reg = "PoolTest.Registry"
    in_reg = start_runs(30, CouncilEx.Test.Pool.Idle, "reg", registry: reg)

    for {id, pid} <- in_reg do
      assert node(pid) == Placement.owner(id, nodes)
      assert RunServer.whereis(id, registry: reg) == {:ok, pid}
      assert {:error, :unknown_run} = RunServer.whereis(id)
      assert {:error, :not_found} = RunServer.state(id)
      assert {:ok, %{status: :running}} = RunServer.state(id, registry: reg)
      assert GenServer.call(RunServer.via(id, registry: reg), :run_id) == id
      :ok = CouncilEx.cancel(pid)
    end

    assert [_, _, _] = status = CouncilEx.Node.status()
    assert Enum.all?(status, &match?(%{status: :up, mode: :managed, draining: false}, &1))
    assert Enum.sum(Enum.map(status, & &1.runs)) >= 300

    {peer, peer_node} = start_peer(nodes)

    try do
      # subscribed there before it starts here: the events reach there
      early = run_id("early")
      fwd = :erpc.call(peer_node, CouncilEx.Test.Helpers, :spawn_forwarder, [early, self()])
      assert_receive {:subscribed, ^fwd, :ok}, 30_000
      {:ok, _} = CouncilEx.start(QuickCouncil, "q", run_id: early)
      assert_receive {:forwarded, ^fwd, {:run_completed, ^early, %{final: _}}}, 30_000
      send(fwd, :stop)

      # a run started here is found, read and awaited there
      [{id, pid, member}] = gated_on(Enum.at(nodes, 1), nodes, 1)
      assert :erpc.call(peer_node, RunServer, :whereis, [id]) == {:ok, pid}
      assert {:ok, %{status: :running}} = :erpc.call(peer_node, RunServer, :state, [id])
      waiter = Task.async(fn -> :erpc.call(peer_node, CouncilEx, :await, [id, 60_000], 70_000) end)
      send(member, :gate_open)
      assert {:ok, %{final: _}} = Task.await(waiter, 70_000)
      assert {:ok, %{final: _}} = CouncilEx.await(id)

      # finished runs of here, by id there
      for {id, _} <- Enum.take_random(runs, 10) do
        assert {:ok, %{status: :completed}} = :erpc.call(peer_node, RunServer, :state, [id])
      end

      # a run started there is found and cancelled here, awaited there
      id2 = run_id("from-peer")
      {:ok, pid2} = :erpc.call(peer_node, CouncilEx, :start, [SlowCouncil, "q", [run_id: id2]])
      assert node(pid2) == Placement.owner(id2, nodes)
      assert RunServer.whereis(id2) == {:ok, pid2}
      assert {:ok, %{status: :running}} = RunServer.state(id2)

      waiter2 =
        Task.async(fn -> :erpc.call(peer_node, CouncilEx, :await, [id2, 60_000], 70_000) end)

      assert CouncilEx.cancel(id2) == :ok
      assert {:error, {:cancelled, _}} = Task.await(waiter2, 70_000)
      assert {:error, {:cancelled, _}} = CouncilEx.await(id2)
    after
      :peer.stop(peer)
    end
  end

  test "kill -9 of one node mid-run: only its runs end (:noconnection), new runs go to the others, it comes back and takes its share",
       %{nodes: nodes} do
    spec = gated_council()

    runs =
      for i <- 1..300 do
        id = run_id("kill")
        {id, Task.async(fn -> CouncilEx.run(spec, i, run_id: id) end)}
      end

    # every run waits at its gate, so all are mid-run
    members =
      for _ <- runs, do: receive(do: ({:gate_waiting, m} -> m), after: (60_000 -> flunk("gate")))

    where =
      Map.new(runs, fn {id, _} ->
        {:ok, pid} = RunServer.whereis(id)
        {id, node(pid)}
      end)

    report("300 gated runs", Enum.frequencies(Map.values(where)))
    victim = Enum.at(nodes, 2)
    survivors = nodes -- [victim]
    {lost_id, _} = Enum.find(runs, fn {id, _} -> where[id] == victim end)
    {kept_id, _} = Enum.find(runs, fn {id, _} -> where[id] != victim end)
    :ok = CouncilEx.PubSub.subscribe(lost_id)
    :ok = CouncilEx.PubSub.subscribe(kept_id)

    # The node stays down until the binary is back: new runs meanwhile.
    old_exe = System.get_env("COUNCIL_NODE")
    System.put_env("COUNCIL_NODE", "/nonexistent/council_node")

    try do
      os_pid = CouncilEx.Node.os_pid(victim)
      {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
      lost_topic = "council_ex:run:" <> lost_id
      assert_receive {:council_ex_down, ^lost_topic, :noconnection}, 30_000
      eventually(fn -> Pool.view().up == survivors end, 1_200, 50)

      for m <- members, do: send(m, :gate_open)
      results = Map.new(runs, fn {id, task} -> {id, Task.await(task, 60_000)} end)

      for {id, result} <- results do
        if where[id] == victim,
          do: assert(result == {:error, :noconnection}, id),
          else: assert(match?({:ok, %{final: _}}, result), id)
      end

      lost = Enum.count(results, fn {id, _} -> where[id] == victim end)
      IO.puts("\n  pool: after the kill: #{lost} runs lost, #{300 - lost} completed")
      assert_receive {:run_completed, ^kept_id, _}, 30_000
      refute_received {:council_ex_down, _, _}

      # new runs: on the survivors, each on its next node after the victim
      new = start_runs(60, QuickCouncil, "after-kill")
      assert Enum.all?(new, fn {_, pid} -> node(pid) in survivors end)
      for {id, pid} <- new, do: assert(node(pid) == Placement.owner(id, survivors))
      assert Enum.any?(new, fn {id, _} -> Placement.owner(id, nodes) == victim end)
      for {id, r} <- await_all(new), do: assert(match?({:ok, _}, r), id)
    after
      if old_exe,
        do: System.put_env("COUNCIL_NODE", old_exe),
        else: System.delete_env("COUNCIL_NODE")
    end

    # back under its name, it takes its share of new runs again
    eventually(fn -> Pool.view().up |> Enum.sort() == Enum.sort(nodes) end, 1_200, 50)
    assert %{restarts: r} = Enum.find(CouncilEx.Node.status(), &(&1.node == victim))
    assert r >= 1
    again = start_runs(60, QuickCouncil, "after-restart")
    report("60 runs after the restart", counts(again))
    assert Enum.any?(again, fn {_, pid} -> node(pid) == victim end)
    for {id, pid} <- again, do: assert(node(pid) == Placement.owner(id, nodes))
    for {id, r} <- await_all(again), do: assert(match?({:ok, _}, r), id)
  end

  test "least-loaded placement: runs go to the nodes with fewer live runs and are found by id",
       %{nodes: nodes} do
    [busy | _] = nodes
    gated = gated_on(busy, nodes, 6)

    # without an id: the id is made to hash to the least-loaded node
    ll = for _ <- 1..4, do: CouncilEx.start(SlowCouncil, "q", placement: :least_loaded)

    for {:ok, pid} <- ll do
      id = RunServer.run_id(pid)
      assert node(pid) != busy
      assert node(pid) == Placement.owner(id, nodes)
      assert RunServer.whereis(id) == {:ok, pid}
    end

    # with an id of one's own: found by asking the nodes in the id's order
    id = Placement.id_for(busy, nodes, fn -> run_id("ll-own") end, 10_000)
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id, placement: :least_loaded)
    assert node(pid) != busy
    assert RunServer.whereis(id) == {:ok, pid}
    assert {:ok, %{status: :running}} = RunServer.state(id)
    # the id is taken in the pool, not only on its node
    assert {:error, {:already_started, ^pid}} = CouncilEx.start(SlowCouncil, "q", run_id: id)

    for {:ok, p} <- ll, do: CouncilEx.cancel(p)
    assert CouncilEx.cancel(id) == :ok
    open_gates(gated)
    for {_, p, _} <- gated, do: assert({:ok, _} = CouncilEx.await(p))
  end

  test "drain: no new runs on the node, its runs finish and are found; undrain takes runs again",
       %{nodes: nodes} do
    drained = Enum.at(nodes, 1)
    [{id, pid, member}] = gated_on(drained, nodes, 1)
    assert CouncilEx.Node.drain(drained) == :ok
    assert Enum.find(CouncilEx.Node.status(), &(&1.node == drained)).draining

    try do
      new = start_runs(60, QuickCouncil, "drain")
      report("60 runs while #{drained} drains", counts(new))
      refute Enum.any?(new, fn {_, p} -> node(p) == drained end)
      for {id, r} <- await_all(new), do: assert(match?({:ok, _}, r), id)

      # its run goes on, found by id (and listed), and finishes
      assert RunServer.whereis(id) == {:ok, pid}
      registry = CouncilEx.Wire.registry_name(RunServer.default_registry())
      status = Enum.find(CouncilEx.Node.status(), &(&1.node == drained))
      assert {registry, id} in status.local_runs
      assert status.runs_alive >= 1
      send(member, :gate_open)
      assert {:ok, %{final: _}} = CouncilEx.await(id)
    after
      assert CouncilEx.Node.undrain(drained) == :ok
    end

    again = start_runs(60, QuickCouncil, "undrained")
    assert Enum.any?(again, fn {_, p} -> node(p) == drained end)
    for {id, r} <- await_all(again), do: assert(match?({:ok, _}, r), id)
  end

  test "after a change of the pool, a start of an id that a slow node may have starts nothing",
       %{nodes: nodes} do
    [_first, second | _] = nodes
    {id, pid} = placed_second(nodes, "slow")
    # the first takes runs again: the id's start now goes there, and asks
    # the others (second among them) whether they have it
    os_pid = Integer.to_string(CouncilEx.Node.os_pid(second))
    {_, 0} = System.cmd("kill", ["-STOP", os_pid])

    try do
      assert CouncilEx.start(CouncilEx.Test.Pool.Idle, "q", run_id: id) == {:error, :timeout}
    after
      {_, 0} = System.cmd("kill", ["-CONT", os_pid])
    end

    assert RunServer.whereis(id) == {:ok, pid}
    assert {:error, {:already_started, ^pid}} = CouncilEx.start(QuickCouncil, "q", run_id: id)
    assert CouncilEx.cancel(pid) == :ok
    assert {:error, {:cancelled, _}} = CouncilEx.await(pid)
  end

  for subscribe <- [false, true] do
    test "subscribed before the start, then started (subscribe: #{subscribe}) on another node than the id's first: every event arrives, once",
         %{nodes: nodes} do
      [first | _] = nodes
      id = Placement.id_for(first, nodes, fn -> run_id("moved") end, 10_000)
      subs_at = fn node -> Pool.stats([node], 10_000)[node].subscriptions end
      before = subs_at.(first)
      # the relay subscribes at the node a start of the id would go to now
      :ok = CouncilEx.PubSub.subscribe(id)
      assert subs_at.(first) == before + 1
      assert CouncilEx.Node.drain(first) == :ok

      try do
        {:ok, pid} = CouncilEx.start(QuickCouncil, "q", run_id: id, subscribe: unquote(subscribe))
        assert node(pid) != first
        assert_receive {:run_started, ^id, _, _}, 30_000
        assert_receive {:run_completed, ^id, %{final: _}}, 30_000
        refute_received {:run_started, ^id, _, _}
        # the subscription at the node that did not get the run is taken back
        eventually(fn -> subs_at.(first) == before end)
      after
        assert CouncilEx.Node.undrain(first) == :ok
      end
    end
  end

  test "a start_link that its slow node makes after the caller's timeout leaves no run linked to the caller",
       %{nodes: nodes} do
    slow = Enum.at(nodes, 2)
    id = Placement.id_for(slow, nodes, fn -> run_id("late") end, 10_000)
    os_pid = Integer.to_string(CouncilEx.Node.os_pid(slow))
    test = self()

    caller =
      spawn_link(fn ->
        receive do: (:go -> :ok)
        send(test, {:started, CouncilEx.start_link(CouncilEx.Test.Pool.Idle, "q", run_id: id)})
        receive do: (:stop -> :ok)
      end)

    # what the caller sends: its lookup of the id, after the start's
    # timeout, is when the node may go on (and answer the start first)
    :erlang.trace(caller, true, [:send])
    {_, 0} = System.cmd("kill", ["-STOP", os_pid])

    try do
      send(caller, :go)

      assert_receive {:trace, ^caller, :send, {:"$gen_call", _, {:whereis, _, ^id}}, _}, 60_000
    after
      {_, 0} = System.cmd("kill", ["-CONT", os_pid])
    end

    assert_receive {:started, {:error, :timeout}}, 60_000
    # the node made the run late: it is cancelled, and not linked to the caller
    eventually(fn -> match?({:ok, %{status: :cancelled}}, RunServer.state(id)) end)
    {:links, links} = Process.info(caller, :links)
    refute Enum.any?(links, &(node(&1) == slow))
    assert Process.alive?(caller)
    send(caller, :stop)
  end

  # A start with subscribe: true under way while the node its run id
  # hashed to (where the relay waits for the run, or is subscribed
  # already) is lost: the run lands on another node, and the caller gets
  # its events, not a notice of the lost node.
  for subscribed_before <- [false, true] do
    test "a node lost while a start with subscribe: true is under way (subscribed before: #{subscribed_before}): the run on another node is followed",
         %{nodes: nodes} do
      [lost | _] = nodes
      id = Placement.id_for(lost, nodes, fn -> run_id("lost-mid-start") end, 10_000)
      topic = CouncilEx.Wire.topic(id)
      if unquote(subscribed_before), do: :ok = CouncilEx.PubSub.subscribe(id)
      relay = Process.whereis(CouncilEx.PubSub.Relay)
      :erlang.trace(relay, true, [:receive])

      start = fn entries ->
        # between the relay's start_begin and the start itself
        os_pid = Integer.to_string(CouncilEx.Node.os_pid(lost))
        {_, 0} = System.cmd("kill", ["-9", os_pid])
        assert_receive {:trace, ^relay, :receive, {:nodedown, ^lost, _}}, 30_000
        # the relay has handled it once it answers a call made after it
        CouncilEx.PubSub.Relay.stats()
        eventually(fn -> lost not in Pool.view().up end, 1_200, 50)

        RunServer.start(
          run_id: id,
          council: QuickCouncil,
          spec: QuickCouncil.__council__(),
          input: "q",
          subscribe: entries
        )
      end

      try do
        assert {:ok, pid} = CouncilEx.PubSub.Relay.start_subscribed(topic, self(), start)
        assert node(pid) != lost
        assert_receive {:run_completed, ^id, %{final: _}}, 30_000
        refute_received {:council_ex_down, ^topic, _}
      after
        :erlang.trace(relay, false, [:receive])
      end

      eventually(fn -> Enum.sort(Pool.view().up) == Enum.sort(nodes) end, 1_200, 50)
    end
  end

  test "a subscription looks for its run's node from the subscriber's process, not the relay's: a slow node holds up that subscriber only",
       %{nodes: nodes} do
    [slow | _] = nodes
    # an id that ranks the slow node first, and whose run is on another
    {id, run} = placed_second(nodes, "sub-slow")
    relay = Process.whereis(CouncilEx.PubSub.Relay)
    test = self()

    subscriber =
      spawn_link(fn ->
        receive do: (:go -> send(test, {:subscribed, CouncilEx.PubSub.subscribe(id)}))

        forward = fn forward ->
          receive do: (m -> send(test, {:forwarded, m}) && forward.(forward))
        end

        forward.(forward)
      end)

    :erlang.trace(relay, true, [:send])
    :erlang.trace(subscriber, true, [:send])
    os_pid = Integer.to_string(CouncilEx.Node.os_pid(slow))
    {_, 0} = System.cmd("kill", ["-STOP", os_pid])

    try do
      send(subscriber, :go)
      # the first lookup of the id goes to the slow node: who sends it
      assert_receive {:trace, sender, :send, {:"$gen_call", _, {:state, _, ^id}}, {_, ^slow}},
                     30_000

      assert sender == subscriber
      # the relay serves the others meanwhile
      assert %{remote: _} = CouncilEx.PubSub.Relay.stats()
    after
      {_, 0} = System.cmd("kill", ["-CONT", os_pid])
      :erlang.trace(relay, false, [:send])
      :erlang.trace(subscriber, false, [:send])
    end

    # found on the other node, past the slow one
    assert_receive {:subscribed, :ok}, 30_000
    assert CouncilEx.cancel(run) == :ok
    assert_receive {:forwarded, {:run_cancelled, ^id, _}}, 30_000
  end

  test "reload/0: the pool follows a change of pool_size at run time", %{nodes: nodes} do
    Application.put_env(:council_ex, :pool_size, 4)

    try do
      assert CouncilEx.Node.reload() == :ok
      [added] = wait_pool(4) -- nodes
      assert %{mode: :managed} = Enum.find(CouncilEx.Node.status(), &(&1.node == added))
      new = start_runs(40, QuickCouncil, "reloaded")
      assert Enum.any?(new, fn {_, p} -> node(p) == added end)
      for {id, r} <- await_all(new), do: assert(match?({:ok, _}, r), id)

      # a bad configuration changes nothing
      Application.put_env(:council_ex, :pool_size, 0)
      assert {:error, %ArgumentError{}} = CouncilEx.Node.reload()
      assert length(Pool.view().up) == 4
    after
      Application.put_env(:council_ex, :pool_size, 3)
    end

    # back to 3: the newest goes
    assert CouncilEx.Node.reload() == :ok
    assert Enum.sort(Pool.view().up) == Enum.sort(nodes)
  end

  test "a node added at run time takes runs; runs from before are still found; remove/1 takes it out",
       %{nodes: nodes} do
    before = start_runs(60, QuickCouncil, "before-add")
    for {id, r} <- await_all(before), do: assert(match?({:ok, _}, r), id)

    assert {:ok, added} = CouncilEx.Node.add(:managed, 60_000)
    assert added not in nodes
    assert CouncilEx.Node.add(added) == {:error, :already_member}
    assert CouncilEx.Node.add(:nohost) == {:error, {:bad_node, :nohost}}
    all = Pool.view().up
    assert Enum.sort(all) == Enum.sort([added | nodes])

    try do
      new = start_runs(80, QuickCouncil, "after-add")
      report("80 runs after adding #{added}", counts(new))
      assert Enum.any?(new, fn {_, p} -> node(p) == added end)
      for {id, p} <- new, do: assert(node(p) == Placement.owner(id, all))
      for {id, r} <- await_all(new), do: assert(match?({:ok, _}, r), id)

      # a run from before whose id now ranks the new node first: still
      # found (on its old node), and its id is still taken
      moved = Enum.filter(before, fn {id, _} -> Placement.owner(id, all) == added end)
      assert moved != []

      for {id, pid} <- moved do
        assert {:ok, %{status: :completed}} = RunServer.state(id)
        assert {:ok, _} = CouncilEx.await(id)
        assert {:error, :run_id_retained} = CouncilEx.start(QuickCouncil, "q", run_id: id)
        assert node(pid) != added
      end
    after
      assert CouncilEx.Node.remove(added) == :ok
    end

    assert Enum.sort(Pool.view().up) == Enum.sort(nodes)
    assert CouncilEx.Node.remove(added) == {:error, :not_found}
  end
end
