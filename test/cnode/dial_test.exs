# The C node dialing out: pids of BEAM nodes it has never been connected to
# (a member server, a subscriber) are reached by connecting first - epmd
# PORT_PLEASE2, then the initiator side of the handshake - as BEAM's
# auto-connect does. A node that does not exist, or refuses our cookie, ends
# as noconnection (member error, monitor DOWN) and the node keeps serving.
Code.require_file("support.exs", __DIR__)

defmodule CNode.DialTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @beam_spec %{id: "b", members: [%{id: "elixir", provider: "beam", options: %{module: "Far"}}],
               rounds: [%{type: "independent_analysis"}], limits: %{max_attempts: 1}}

  def start(node, opts),
    do: GenServer.call({:council_ex, node}, {:start, Map.merge(%{input: "What is 2+2?"}, opts)})


  # Code that runs on the second node: a member server and an event
  # forwarder (compiled here, loaded there).
  @peer_code """
  defmodule DialPeer do
    def member_server do
      receive do
        {:council_member_call, run_pid, id, req} ->
          send(run_pid, {:council_member_token, id, "far"})
          send(run_pid, {:council_member_reply, id,
                         {:ok, "far away: " <> req["input"] <> " (" <> req["options"]["module"] <> ")"}})
          member_server()
      end
    end

    def forwarder(to) do
      receive do
        m -> send(to, {:forwarded, m}); forwarder(to)
      end
    end

    def spawn_member_server, do: spawn(&member_server/0)
    def spawn_forwarder(to), do: spawn(fn -> forwarder(to) end)
  end
  """

  defp start_peer(cookie) do
    {peer, peer_node} = CNodeTest.start_peer("dialpeer", cookie)
    {mod, bin} = peer_module()
    {:module, ^mod} = :erpc.call(peer_node, :code, :load_binary, [mod, ~c"dial_peer", bin])
    {peer, peer_node, mod}
  end

  # compiled once per run of the script
  defp peer_module do
    case :persistent_term.get({__MODULE__, :peer_code}, nil) do
      nil ->
        [{mod, bin}] = Code.compile_string(@peer_code)
        :persistent_term.put({__MODULE__, :peer_code}, {mod, bin})
        {mod, bin}

      mb ->
        mb
    end
  end

  defp connected_to?(peer_node, cnode),
    do: cnode in :erpc.call(peer_node, Node, :list, [:hidden])

  defp serving?(node), do: GenServer.call({:council_ex, node}, :ping, 15_000) == :pong

  # Stops the peer and waits until the C node has seen its connection go
  # (and with it whatever it held for the peer's pids), so the next test
  # starts from a settled node: its stats baseline does not shrink later.
  defp stop_peer(peer, node, connections) do
    :peer.stop(peer)
    assert wait_until(fn -> stats(node).connections == connections end)
  end

  # A pid on a node name nobody registered with epmd.
  defp ghost_pid do
    name = "ghost#{System.unique_integer([:positive])}@#{host()}"
    :erlang.binary_to_term(<<131, 88, 119, byte_size(name), name::binary, 5::32, 0::32, 1::32>>)
  end

  setup_all do
    info = start_node()
    on_exit(fn -> stop_node(info) end)
    {:ok, info: info}
  end

  test "a beam member served on a node the C node never saw: it dials out", %{info: i} do
    base = stats(i.node)
    {peer, peer_node, mod} = start_peer(cookie())
    refute connected_to?(peer_node, i.node)
    server = :erpc.call(peer_node, mod, :spawn_member_server, [])
    Process.flag(:trap_exit, true)
    {:ok, pid} =
      GenServer.call({:council_ex, i.node},
        {:start_link, %{input: "What is 2+2?", spec: @beam_spec, member_server: server,
                        subscribe: [self()]}})
    evs = events()
    assert {:run_completed, _, %{final: "far away: What is 2+2? (Far)"}} = List.last(evs)
    assert Enum.any?(evs, &match?({:member_token, _, _, "elixir", "far"}, &1))
    assert_receive {:EXIT, ^pid, :normal}, 10_000
    Process.flag(:trap_exit, false)
    assert connected_to?(peer_node, i.node)
    # a second run reuses the connection
    {:ok, _} = start(i.node, %{spec: @beam_spec, member_server: server, subscribe: [self()]})
    assert {:run_completed, _, %{final: "far away: " <> _}} = List.last(events())
    stop_peer(peer, i.node, base.connections)
    assert serving?(i.node)
  end

  test "a subscriber on an unconnected node receives the run's events", %{info: i} do
    {peer, peer_node, mod} = start_peer(cookie())
    refute connected_to?(peer_node, i.node)
    tagged = :erpc.call(peer_node, mod, :spawn_forwarder, [self()])
    plain = :erpc.call(peer_node, mod, :spawn_forwarder, [self()])
    base = stats(i.node)
    run_id = "far-sub-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    # the first monitor dials; the frames made meanwhile wait for the connection
    assert GenServer.call({:council_ex, i.node}, {:subscribe, topic, tagged, :tagged}) == :ok
    spec = %{id: "m", members: [%{id: "a", provider: "mock"}],
             rounds: [%{type: "independent_analysis"}]}
    {:ok, _pid} = start(i.node, %{spec: spec, run_id: run_id, subscribe: [plain]})
    assert_receive {:forwarded, {:council_ex_event, ^topic, {:run_started, ^run_id, "m", _}}}, 30_000
    assert_receive {:forwarded, {:council_ex_event, ^topic, {:run_completed, ^run_id, %{final: f}}}}, 30_000
    # the plain subscriber too, and in order
    assert_receive {:forwarded, {:run_started, ^run_id, "m", _}}, 10_000
    assert_receive {:forwarded, {:run_completed, ^run_id, %{final: ^f}}}, 10_000
    assert connected_to?(peer_node, i.node)
    # the subscriber's node goes away: its monitor fires, nothing is left
    stop_peer(peer, i.node, base.connections)
    assert wait_until(fn -> stats(i.node).subscriptions == base.subscriptions end)
    assert serving?(i.node)
  end

  test "a member server on a node that does not exist: member error noconnection", %{info: i} do
    base = stats(i.node)
    # linked, so the exit reason is seen even when the run has already ended
    # by the time the reply arrives (the failed dial can be that fast)
    Process.flag(:trap_exit, true)
    {:ok, pid} =
      GenServer.call({:council_ex, i.node},
        {:start_link, %{input: "What is 2+2?", spec: @beam_spec, member_server: ghost_pid(),
                        subscribe: [self()]}})
    evs = events()
    assert {:run_failed, _, errors, _} = List.last(evs)
    assert Enum.any?(errors, &(&1 =~ "beam provider: member server down: noconnection")),
           inspect(errors)
    assert_receive {:EXIT, ^pid, {:shutdown, {:failed, _}}}, 10_000
    Process.flag(:trap_exit, false)
    # a subscription for a ghost pid: accepted, then dropped when the dial fails
    assert GenServer.call({:council_ex, i.node}, {:subscribe, "council_ex:run:x", ghost_pid(), :tagged}) == :ok
    assert wait_until(fn ->
             s = stats(i.node)
             s.subscriptions == base.subscriptions and s.monitors == base.monitors and
               s.links == base.links
           end)
    # many at once: every one fails, the node keeps serving
    for _ <- 1..20, do: send({:council_ex, i.node}, :nothing)
    tasks = for _ <- 1..10 do
      Task.async(fn -> start(i.node, %{spec: @beam_spec, member_server: ghost_pid()}) end)
    end
    pids = for t <- tasks, do: (assert({:ok, pid} = Task.await(t, 30_000)); pid)
    assert serving?(i.node)
    # they all end (a run already gone gives :noproc): none is left running
    # into the next test
    for pid <- pids do
      ref = Process.monitor(pid)
      assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 20_000
      assert reason in [:noproc] or match?({:shutdown, {:failed, _}}, reason)
    end
    {:ok, _} = start(i.node, %{spec: %{id: "m", members: [%{id: "a", provider: "mock"}],
                                       rounds: [%{type: "independent_analysis"}]},
                               subscribe: [self()]})
    assert {:run_completed, _, _} = List.last(events())
  end

  test "a node with another cookie refuses the dial cleanly: noconnection", %{info: i} do
    base = stats(i.node)
    {peer, peer_node, mod} = start_peer(cookie())
    server = :erpc.call(peer_node, mod, :spawn_member_server, [])
    # from now on the peer expects another cookie from new connections
    true = :erpc.call(peer_node, :erlang, :set_cookie, [:"not-the-council-cookie"])
    {:ok, _pid} = start(i.node, %{spec: @beam_spec, member_server: server, subscribe: [self()]})
    evs = events()
    assert {:run_failed, _, errors, _} = List.last(evs)
    assert Enum.any?(errors, &(&1 =~ "member server down: noconnection")), inspect(errors)
    refute connected_to?(peer_node, i.node)
    stop_peer(peer, i.node, base.connections)
    assert serving?(i.node)
  end
end
