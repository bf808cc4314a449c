defmodule CouncilEx.Test.ExternalNode.Slow do
  @moduledoc "One mock member that takes ten minutes: a run still going when its node goes."
  use CouncilEx

  member :a, provider: :mock, latency_ms: 600_000
  round :independent_analysis
  limits member_timeout_ms: 900_000
end

defmodule CouncilEx.ExternalNodeTest do
  # External mode (`config :council_ex, node: :"name@host"`): the library
  # uses a C node somebody else runs. Here the test runs that node itself
  # (council_node --sname ... --cookie-file ..., on the test VM's epmd),
  # restarts the library's node manager with the :node setting, and checks
  # through the public API that runs, events, whereis and state go to that
  # node, that the library never starts a node of its own, and what callers
  # see when the external node stops or is killed and comes back under the
  # same name. Every test puts the library back in managed mode (and stops
  # the nodes it started) in on_exit.
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only
  # several starts of the ASan node and reconnections with backoff (up to 5 s)
  @moduletag timeout: 600_000

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub.Relay
  alias CouncilEx.RunServer
  alias CouncilEx.Test.{MockCouncil, QuickCouncil}
  alias CouncilEx.Test.ExternalNode.Slow

  # How long a start of the (ASan) C node, or a reconnection, may take on
  # a loaded machine.
  @node_deadline 60_000

  # The C node runs under CouncilEx.Node's shell wrapper: it reports the
  # node's OS pid, and kills the node when our end of the port closes (the
  # test process exits, or the VM dies), so no node outlives the test. Its
  # exit status is the node's.
  @wrapper CouncilEx.Node.wrapper_script()

  setup do
    # A private directory (0700) for the cookie file (0600): the node
    # refuses a cookie file that group or others can read.
    dir =
      Path.join(
        System.tmp_dir!(),
        "council_ext_test_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    :ok = File.chmod(dir, 0o700)
    cookie_file = Path.join(dir, "cookie")
    {:ok, fd} = :file.open(cookie_file, [:write, :exclusive, :raw, :binary])
    :ok = File.chmod(cookie_file, 0o600)
    :ok = :file.write(fd, Atom.to_string(Node.get_cookie()))
    :ok = :file.close(fd)

    sname = "ext_#{System.pid()}_#{System.unique_integer([:positive])}"

    on_exit(fn ->
      try do
        # back to managed mode: the manager starts its own node again
        Application.delete_env(:council_ex, :node)
        Application.delete_env(:council_ex, :node_wait_timeout)
        restart_manager()
      after
        stop_external(sname)
        File.rm_rf(dir)
      end

      eventually(
        fn ->
          match?(
            %{mode: :managed, status: :up, os_pid: p} when is_integer(p),
            CouncilEx.Node.info()
          )
        end,
        1_200,
        50
      )
    end)

    %{sname: sname, cookie_file: cookie_file}
  end

  # ------------------------------------------------------------- helpers

  # The epmd port of this VM (-epmd_port, which erl sets from
  # ERL_EPMD_PORT), else epmd's default: the external node registers there.
  defp epmd_port do
    case :init.get_argument(:epmd_port) do
      {:ok, [[port | _] | _]} -> List.to_string(port)
      _ -> "4369"
    end
  end

  # Starts `council_node --sname <sname> --cookie-file <file>` and waits
  # for its readiness line. %{port, os_pid, node}.
  defp start_external(%{sname: sname, cookie_file: cookie_file}) do
    exe = Path.expand(CouncilEx.Node.executable())
    assert File.regular?(exe), "C node binary #{exe} not built"

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        {:env, [{~c"ERL_EPMD_PORT", String.to_charlist(epmd_port())}]},
        args: ["-c", @wrapper, "external_node", exe, "--sname", sname, "--cookie-file", cookie_file]
      ])

    deadline = System.monotonic_time(:millisecond) + @node_deadline
    {os_pid, _} = port |> await_line("council_node_pid ", deadline) |> Integer.parse()
    ready = await_line(port, "council_node ready ", deadline)
    [name | _] = String.split(ready, " ", parts: 2)
    node = String.to_atom(name)
    # the name this VM gives a short name on this host
    [_, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
    assert node == :"#{sname}@#{host}"
    %{port: port, os_pid: os_pid, node: node}
  end

  # The rest of the first line of `port` that starts with `prefix`.
  defp await_line(port, prefix, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix),
          do: String.replace_prefix(line, prefix, ""),
          else: await_line(port, prefix, deadline)

      {^port, {:data, {:noeol, _}}} ->
        await_line(port, prefix, deadline)

      {^port, {:exit_status, status}} ->
        flunk("the external C node exited with status #{status} before #{inspect(prefix)}")
    after
      remaining -> flunk("no #{inspect(prefix)} line from the external C node in time")
    end
  end

  # The exit status of the external node of `port`.
  defp await_exit(%{port: port}) do
    receive do
      {^port, {:exit_status, status}} -> status
    after
      @node_deadline -> flunk("the external C node did not exit")
    end
  end

  defp signal(%{os_pid: os_pid}, sig) do
    {_, 0} = System.cmd("kill", ["-#{sig}", Integer.to_string(os_pid)])
    :ok
  end

  # The node manager restarted (it reads :node when it starts), as the
  # application supervisor would: terminate/2 stops a managed node.
  defp restart_manager do
    :ok = Supervisor.terminate_child(CouncilEx.AppSupervisor, CouncilEx.Node)
    {:ok, _} = Supervisor.restart_child(CouncilEx.AppSupervisor, CouncilEx.Node)
    :ok
  end

  defp use_external(node) do
    Application.put_env(:council_ex, :node, node)
    restart_manager()
    eventually(fn -> CouncilEx.Node.current() == node end, 1_200, 50)
  end

  # Command lines (as lists) of the live processes of this machine.
  defp processes do
    for entry <- File.ls!("/proc"),
        match?({_, ""}, Integer.parse(entry)),
        {:ok, cmdline} <- [File.read("/proc/#{entry}/cmdline")],
        args = String.split(cmdline, <<0>>, trim: true),
        args != [] do
      {String.to_integer(entry), args}
    end
  end

  defp sname_of(args) do
    args
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.find_value(fn
      ["--sname", name] -> name
      _ -> nil
    end)
  end

  # OS pids of C nodes the library started (its --sname council_<VM pid>_N),
  # and of their wrappers.
  defp managed_processes do
    prefix = "council_#{System.pid()}_"

    for {pid, args} <- processes(),
        name = sname_of(args),
        is_binary(name) and String.starts_with?(name, prefix),
        do: pid
  end

  # Names registered with this VM's epmd.
  defp epmd_names do
    {:ok, names} = :erl_epmd.names()
    Enum.map(names, fn {name, _port} -> List.to_string(name) end)
  end

  defp no_managed_node? do
    prefix = "council_#{System.pid()}_"

    managed_processes() == [] and
      not Enum.any?(epmd_names(), &String.starts_with?(&1, prefix)) and
      not Enum.any?(Node.list(:connected), &String.starts_with?(Atom.to_string(&1), prefix))
  end

  # Stops the external nodes started under `sname` (SIGTERM, so that an
  # ASan build reports leaks, then SIGKILL), by their OS pids.
  defp stop_external(sname) do
    node_pids = fn ->
      for {pid, args} <- processes(),
          sname_of(args) == sname,
          Path.basename(hd(args)) != "sh",
          do: pid
    end

    for pid <- node_pids.(), do: System.cmd("kill", ["-TERM", "#{pid}"], stderr_to_stdout: true)

    try do
      eventually(fn -> node_pids.() == [] end, 600, 50)
    rescue
      _ ->
        for pid <- node_pids.(),
            do: System.cmd("kill", ["-KILL", "#{pid}"], stderr_to_stdout: true)
    end
  end

  # A run of MockCouncil with subscribe: true on `node`: every event, in
  # order, ends with run_completed.
  defp assert_subscribed_run(node, input) do
    id = run_id("ext")
    assert {:ok, pid} = CouncilEx.start(MockCouncil, input, run_id: id, subscribe: true)
    assert node(pid) == node
    events = collect_events(id, 30_000)
    assert [{:run_started, ^id, _council, ^input} | _] = events
    assert {:run_completed, ^id, %{final: final}} = List.last(events)
    assert is_binary(final) and final != ""

    rounds = for {:round_started, ^id, name, _idx} <- events, do: name
    assert rounds == [:independent_analysis, :anonymized_peer_review, :vote, :chair]
    assert Enum.any?(events, &match?({:member_token, ^id, _, _, _}, &1))
    # the outcome stays readable at the node, by pid and by id
    assert {:ok, %{final: ^final}} = CouncilEx.await(pid, 15_000)
    assert {:ok, %{final: ^final}} = CouncilEx.await(id, 15_000)
    id
  end

  # an external node started and used, with the runs of runs_in_flight/0 on it
  defp external_with_runs_in_flight(ctx) do
    ext = start_external(ctx)
    use_external(ext.node)
    {id, pid, task} = runs_in_flight()
    {ext, ext.node, id, pid, task}
  end

  # A Slow run started with start_link(subscribe: true), and a run/3 of
  # Slow in a task, both under way at the node.
  defp runs_in_flight do
    Process.flag(:trap_exit, true)
    id = run_id("ext-linked")
    assert {:ok, pid} = CouncilEx.start_link(Slow, "q", run_id: id, subscribe: true)
    assert_receive {:member_started, ^id, _, "a"}, 30_000

    run3_id = run_id("ext-run3")
    task = Task.async(fn -> CouncilEx.run(Slow, "q", run_id: run3_id) end)
    eventually(fn -> match?({:ok, _}, RunServer.whereis(run3_id)) end, 600, 50)
    eventually(fn -> Relay.subscribers("council_ex:run:" <> run3_id) != [] end, 600, 50)
    {id, pid, task}
  end

  # With the external node gone: the library waits for it (here 1 s, the
  # :node_wait_timeout) and reports it unavailable; a pid of the lost node
  # gives :noconnection. It starts no node of its own meanwhile.
  defp assert_unavailable(node, id, pid) do
    Application.put_env(:council_ex, :node_wait_timeout, 1_000)

    try do
      eventually(fn -> CouncilEx.Node.current() == nil end)
      assert %{mode: :external, status: :down, node: ^node, os_pid: nil} = CouncilEx.Node.info()
      assert CouncilEx.Node.os_pid() == nil
      assert CouncilEx.Node.await() == {:error, :unavailable}
      assert CouncilEx.node() == nil
      assert CouncilEx.Node.call(:ping) == {:error, :unavailable}
      assert CouncilEx.run(QuickCouncil, "q", timeout: 30_000) == {:error, :unavailable}
      assert CouncilEx.start(QuickCouncil, "q") == {:error, :unavailable}
      assert CouncilEx.start(QuickCouncil, "q", subscribe: true) == {:error, :unavailable}
      assert RunServer.whereis(id) == {:error, :unavailable}
      assert RunServer.state(id) == {:error, :unavailable}
      assert CouncilEx.await(id, 5_000) == {:error, :unavailable}
      assert CouncilEx.cancel(id) == {:error, :unavailable}
      assert CouncilEx.PubSub.subscribe(id) == {:error, :unavailable}
      assert RunServer.state(pid) == {:error, :noconnection}
      assert CouncilEx.await(pid, 5_000) == {:error, :noconnection}
      # the manager kept trying to connect, and started nothing
      assert %{mode: :external, status: :down, os_pid: nil} = CouncilEx.Node.info()
      assert no_managed_node?()
      # nothing was left subscribed, and no start is pending
      assert %{starts: 0} = Relay.stats()
    after
      Application.delete_env(:council_ex, :node_wait_timeout)
    end
  end

  # The external node back under the same name: the manager reconnects
  # (backoff up to 5 s) and runs go there again. The new node knows nothing
  # of the old node's runs: whereis of the old run is `whereis` (a run lost
  # with its node mid-run is a stale entry, :runner_dead; one that ended
  # first is :unknown_run).
  defp assert_reconnects(ctx, node, old_id, old_pid, whereis) do
    restarts = CouncilEx.Node.info().restarts
    ext = start_external(ctx)
    assert ext.node == node
    eventually(fn -> CouncilEx.Node.current() == node end, 1_200, 50)
    assert %{mode: :external, status: :up, node: ^node, os_pid: nil} = CouncilEx.Node.info()
    # not counted as a lost node
    assert CouncilEx.Node.info().restarts == restarts
    assert GenServer.call({:council_ex, node}, :ping) == :pong
    assert_subscribed_run(node, "after it came back")
    assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "again", timeout: 60_000)
    assert RunServer.state(old_id) == {:error, :not_found}
    assert RunServer.whereis(old_id) == {:error, whereis}
    # a pid of the node that went, named like the new one: not found there
    assert RunServer.state(old_pid) == {:error, :not_found}
    assert no_managed_node?()
    ext
  end

  # --------------------------------------------------------------- tests

  test "a node the library did not start serves runs, events, whereis and state", ctx do
    ext = start_external(ctx)
    node = ext.node
    use_external(node)

    # external mode: no node of the library's own (the managed one it ran
    # before was stopped when the manager restarted, and none replaced it)
    assert %{mode: :external, status: :up, node: ^node, os_pid: nil} = CouncilEx.Node.info()
    assert CouncilEx.Node.os_pid() == nil
    assert CouncilEx.node() == node
    eventually(&no_managed_node?/0, 1_200, 50)
    assert "#{ctx.sname}" in epmd_names()
    assert GenServer.call({:council_ex, node}, :ping) == :pong

    # a full run
    assert {:ok, %{final: final, rounds: rounds, errors: []}} =
             CouncilEx.run(MockCouncil, "Which plan?", timeout: 60_000)

    assert is_binary(final) and final != ""
    assert List.last(rounds).name == :chair

    # start(subscribe: true): every event, from run_started to run_completed
    assert_subscribed_run(node, "2+2?")

    # whereis/state of a running run (gated: it cannot end before the gate
    # opens), PubSub.subscribe after its start; an Elixir-module member is
    # served through the external node too
    id = run_id("ext-gated")
    assert {:ok, pid} = CouncilEx.start(gated_council(), "gated", run_id: id)
    assert node(pid) == node
    assert RunServer.whereis(id) == {:ok, pid}
    assert {:ok, %{status: :running}} = RunServer.state(id)
    assert {:ok, %{status: :running}} = RunServer.state(pid)
    assert RunServer.run_id(pid) == id
    assert :ok = CouncilEx.PubSub.subscribe(id)
    assert Relay.subscribers("council_ex:run:" <> id) == [self()]
    open_gate(30_000)
    assert_receive {:member_completed, ^id, :independent_analysis, "gate", _}, 30_000
    assert_receive {:run_completed, ^id, %{final: _}}, 30_000
    eventually(fn -> Relay.subscribers("council_ex:run:" <> id) == [] end)
    assert {:ok, %{status: :completed}} = RunServer.state(id)
    # ended: no one's from then on, its summary still readable
    assert RunServer.whereis(id) == {:error, :unknown_run}
    assert {:ok, %{status: :completed}} = RunServer.state(pid)

    # still the same external node, and still none of the library's own
    assert %{mode: :external, status: :up, node: ^node, restarts: 0} = CouncilEx.Node.info()
    assert no_managed_node?()
  end

  test "SIGTERM of the external node: runs cancelled, :unavailable while it is gone, used again when back",
       ctx do
    {ext, node, id, pid, task} = external_with_runs_in_flight(ctx)
    assert node(pid) == node

    signal(ext, "TERM")

    # a clean stop: the runs are cancelled, then the linked caller is told
    # shutdown; the node exits with status 0
    assert_receive {:run_cancelled, ^id, %{final: nil}}, 30_000
    assert_receive {:EXIT, ^pid, :shutdown}, 30_000
    assert {:error, {:cancelled, %{final: nil}}} = Task.await(task, 30_000)
    assert await_exit(ext) == 0
    # the terminal event ended the subscription before the node went
    refute_received {:council_ex_down, _, _}

    # the library noticed, does not start a node instead, and reports it
    assert_unavailable(node, id, pid)
    assert CouncilEx.Node.info().restarts == 1

    assert_reconnects(ctx, node, id, pid, :unknown_run)
  end

  test "kill -9 of the external node mid-run: :noconnection, then used again when back", ctx do
    {ext, node, id, pid, task} = external_with_runs_in_flight(ctx)
    topic = "council_ex:run:" <> id
    waiter = Task.async(fn -> CouncilEx.await(pid) end)
    # the await is under way at the node when it dies
    wait_calling(waiter.pid)

    signal(ext, "KILL")

    assert_receive {:EXIT, ^pid, :noconnection}, 30_000
    assert_receive {:council_ex_down, ^topic, :noconnection}, 30_000
    assert Task.await(waiter, 30_000) == {:error, :noconnection}
    assert Task.await(task, 30_000) == {:error, :noconnection}
    assert await_exit(ext) == 128 + 9
    eventually(fn -> Relay.subscribers(topic) == [] end)

    assert_unavailable(node, id, pid)
    assert CouncilEx.Node.info().restarts == 1

    assert_reconnects(ctx, node, id, pid, :runner_dead)
  end

  test "connection lost, the external node still running: :noconnection, then reconnected to it",
       ctx do
    {ext, node, id, pid, task} = external_with_runs_in_flight(ctx)
    topic = "council_ex:run:" <> id

    assert Node.disconnect(node) == true

    assert_receive {:EXIT, ^pid, :noconnection}, 30_000
    assert_receive {:council_ex_down, ^topic, :noconnection}, 30_000
    assert Task.await(task, 30_000) == {:error, :noconnection}

    # the manager notices the loss (restarts: 1) and reconnects (after
    # 100 ms) to the node, which never went
    eventually(
      fn -> match?(%{status: :up, restarts: 1}, CouncilEx.Node.info()) end,
      1_200,
      50
    )

    assert CouncilEx.Node.current() == node

    assert %{mode: :external, status: :up, node: ^node, os_pid: nil, restarts: 1} =
             CouncilEx.Node.info()

    # the same node: still running, and it knows the runs of before
    ext_port = ext.port
    refute_received {^ext_port, {:exit_status, _}}
    assert File.exists?("/proc/#{ext.os_pid}")
    assert {:ok, %{status: _}} = RunServer.state(id)
    assert_subscribed_run(node, "after the reconnection")
    assert no_managed_node?()
  end

  test "a configured external node that is not running yet: :unavailable until it starts", ctx do
    [_, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
    node = :"#{ctx.sname}@#{host}"
    Application.put_env(:council_ex, :node, node)
    restart_manager()
    Application.put_env(:council_ex, :node_wait_timeout, 1_000)

    try do
      assert CouncilEx.Node.await() == {:error, :unavailable}
      assert CouncilEx.start(QuickCouncil, "q") == {:error, :unavailable}
      assert %{mode: :external, os_pid: nil} = CouncilEx.Node.info()
      assert CouncilEx.Node.current() == nil
      eventually(&no_managed_node?/0, 1_200, 50)
    after
      Application.delete_env(:council_ex, :node_wait_timeout)
    end

    # an await under way when the node comes up is answered with it
    waiter = Task.async(fn -> CouncilEx.Node.await(@node_deadline) end)
    ext = start_external(ctx)
    assert ext.node == node
    assert Task.await(waiter, @node_deadline + 5_000) == {:ok, node}
    assert %{mode: :external, status: :up, node: ^node, os_pid: nil} = CouncilEx.Node.info()
    assert_subscribed_run(node, "first run")
    assert no_managed_node?()
  end
end
