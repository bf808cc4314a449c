# The C node under bad input: wrong cookies, malformed and oversized frames,
# silent handshakes. Each bad connection is closed; the others keep working.
# Oversized requests are answered, their connection kept.
Code.require_file("support.exs", __DIR__)

defmodule CNode.RobustnessTest do
  use ExUnit.Case, async: false
  import CNodeTest

  setup_all do
    info = start_node()
    small = start_node(args: ["--max-frame-bytes", "4096"])
    on_exit(fn -> stop_node(info); stop_node(small) end)
    {:ok, info: info, small: small}
  end

  defp closed?(s, timeout \\ 15_000) do
    case :gen_tcp.recv(s, 0, timeout) do
      {:error, :closed} -> true
      {:ok, ""} -> closed?(s, timeout)   # a tick
      other -> other
    end
  end

  defp serving?(node), do: GenServer.call({:council_ex, node}, :ping, 15_000) == :pong

  test "a wrong cookie is refused and the node keeps serving", %{info: i} do
    assert {:error, _} = raw_connect(i.port, "not-the-cookie")
    assert serving?(i.node)
    # a BEAM node with the wrong cookie for this node gets :pang
    Node.disconnect(i.node)
    Node.set_cookie(i.node, :"definitely-wrong")
    assert Node.ping(i.node) == :pang
    Node.set_cookie(i.node, String.to_atom(cookie()))
    assert Node.ping(i.node) == :pong
    assert serving?(i.node)
  end

  test "a tick is answered with a tick", %{info: i} do
    {:ok, s, _} = raw_connect(i.port, cookie())
    :ok = :gen_tcp.send(s, "")
    assert {:ok, ""} = :gen_tcp.recv(s, 0, 10_000)
    :gen_tcp.close(s)
  end

  test "a raw client can call the service with a real handshake", %{info: i} do
    {:ok, s, name} = raw_connect(i.port, cookie())
    me = raw_pid(name, 7)
    ref = make_ref()
    raw_send(s, {6, me, :"", :council_ex}, {:"$gen_call", {me, ref}, :ping})
    # a bare-ref tag: the reply comes as a SEND to our pid
    assert {{2, _, ^me}, {^ref, :pong}} = raw_recv(s)
    # an improper alias tag [alias | ref] comes back byte for byte via ALIAS_SEND
    alias_ref = make_ref()
    raw_send(s, {6, me, :"", :council_ex}, {:"$gen_call", {me, [:alias | alias_ref]}, :ping})
    assert {{33, _, ^alias_ref}, {[:alias | ^alias_ref], :pong}} = raw_recv(s)
    # UNLINK_ID is acknowledged
    svc = make_pid(i.node, 2, i.creation)
    raw_send(s, {1, me, svc})
    raw_send(s, {35, 77, me, svc})
    assert {{36, 77, ^svc, ^me}, nil} = raw_recv(s)
    # MONITOR_P on a missing name: MONITOR_P_EXIT noproc with the atom as sent
    mref = make_ref()
    raw_send(s, {19, me, :ghost, mref})
    assert {{21, :ghost, ^me, ^mref, :noproc}, nil} = raw_recv(s)
    # LINK to a missing pid: EXIT noproc
    ghost = make_pid(i.node, 31337, i.creation)
    raw_send(s, {1, me, ghost})
    assert {{3, ^ghost, ^me, :noproc}, nil} = raw_recv(s)
    :gen_tcp.close(s)
  end

  test "malformed frames close that connection only", %{info: i} do
    bad_frames = [
      "x" <> "garbage",                                   # unknown frame type
      "p" <> "garbage",                                   # no version byte
      "p" <> <<131, 104, 3, 97, 2>>,                      # truncated control tuple
      "p" <> :erlang.term_to_binary({99, :a, :b}),        # unknown operation
      "p" <> :erlang.term_to_binary({2, :"", :not_a_pid}), # SEND to an atom
      "p" <> :erlang.term_to_binary({2, :"", self()}),     # SEND without payload
      "p" <> <<131, 108, 255, 255, 255, 255, 106>>,       # list claims 4G elements
      "p" <> <<131>> <> :binary.copy(<<108, 0, 0, 0, 1>>, 2000) <> :binary.copy(<<106>>, 4001), # too deep
      "p" <> <<131, 109, 127, 255, 255, 255, 1, 2, 3>>,   # binary longer than the frame
      "p" <> <<131, 119, 200, "short">>,                  # atom past the end
      "p" <> :erlang.term_to_binary({2, :"", self()}) <> <<131, 82, 0>>  # atom cache ref
    ]
    for f <- bad_frames do
      {:ok, s, _} = raw_connect(i.port, cookie())
      :ok = :gen_tcp.send(s, f)
      assert closed?(s) == true, "frame #{inspect(f, limit: 20)} did not close the connection"
      assert serving?(i.node)
    end
  end

  test "an oversized frame header closes the connection without allocating it", %{info: i} do
    {:ok, s, _} = raw_connect(i.port, cookie())
    :ok = :inet.setopts(s, packet: :raw)
    :ok = :gen_tcp.send(s, <<0x7F, 0xFF, 0xFF, 0x00>> <> :binary.copy("p", 2048))
    assert closed?(s) == true
    assert serving?(i.node)
  end

  @slow %{id: "s", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
          rounds: [%{type: "independent_analysis"}]}
  @quick %{id: "q", members: [%{id: "a", provider: "mock"}],
           rounds: [%{type: "independent_analysis"}]}

  # A run linked to this process and monitored by it, with a subscription:
  # what a dropped connection would take away.
  defp linked_run(node) do
    Process.flag(:trap_exit, true)
    {:ok, pid} = GenServer.call({:council_ex, node},
                                {:start_link, %{spec: @slow, input: "q", subscribe: [self()]}})
    {pid, Process.monitor(pid)}
  end

  defp still_linked(node, pid, mref, before) do
    assert GenServer.call(pid, :state) |> elem(1) |> Map.get(:status) == :running
    after_ = stats(node)
    for k <- [:connections, :links, :monitors, :subscriptions],
        do: assert(after_[k] == before[k], inspect({k, before, after_}))
    assert after_.too_large > before.too_large
    # the link and the monitor still work: cancel, then EXIT and DOWN
    assert GenServer.call(pid, :cancel) == :ok
    assert_receive {:DOWN, ^mref, :process, ^pid, {:shutdown, :cancelled}}, 15_000
    assert_receive {:EXIT, ^pid, {:shutdown, :cancelled}}, 15_000
    refute_received {:nodedown, _}
  end

  test "a 50 MB request gets {:error, :request_too_large}; the connection, its links, " <>
         "monitors and subscriptions stay", %{info: i} do
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    {pid, mref} = linked_run(i.node)
    before = stats(i.node)
    req = {:start, %{spec: @quick, input: :binary.copy("x", 50_000_000)}}
    assert GenServer.call({:council_ex, i.node}, req, 120_000) == {:error, :request_too_large}
    # the same connection serves the next call
    assert match?({:ok, _}, GenServer.call({:council_ex, i.node},
                                           {:start, %{spec: @quick, input: "small"}}))
    # a run pid answers an oversized call the same way
    assert GenServer.call(pid, {:big, :binary.copy("y", 20_000_000)}, 120_000) ==
             {:error, :request_too_large}
    still_linked(i.node, pid, mref, before)
    :net_kernel.monitor_nodes(false, node_type: :all)
  end

  test "a frame over --max-frame-bytes is refused alone", %{small: sm} do
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    {pid, mref} = linked_run(sm.node)
    before = stats(sm.node)
    big = :binary.copy("x", 10_000)
    assert GenServer.call({:council_ex, sm.node}, {:big, big}) == {:error, :request_too_large}
    # a plain send over the limit is dropped; the connection stays
    send({:council_ex, sm.node}, {:big, big})
    assert serving?(sm.node)
    still_linked(sm.node, pid, mref, before)
    :net_kernel.monitor_nodes(false, node_type: :all)
  end

  test "a term over the depth limit is refused alone", %{info: i} do
    before = stats(i.node)
    deep = Enum.reduce(1..1000, :x, fn _, acc -> [acc] end)
    assert GenServer.call({:council_ex, i.node}, {:deep, deep}) == {:error, :request_too_large}
    assert serving?(i.node)
    assert stats(i.node).connections == before.connections
  end

  test "garbage instead of a handshake is refused", %{info: i} do
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, i.port, [:binary, active: false])
    :ok = :gen_tcp.send(s, <<0xFF, 0xFF>> <> :binary.copy("z", 100))
    assert closed?(s) == true
    {:ok, s2} = :gen_tcp.connect({127, 0, 0, 1}, i.port, [:binary, active: false, packet: 2])
    :ok = :gen_tcp.send(s2, <<?N, 0::64, 1::32, 5::16, "x@y@z">>)
    # no distribution flags at all: told so (as BEAM tells it), then closed
    assert {:ok, "snot_allowed"} = :gen_tcp.recv(s2, 0, 15_000)
    assert closed?(s2) == true
    assert serving?(i.node)
  end

  test "a cookie file readable by others is refused at startup" do
    dir = System.get_env("CNODE_TMP") || System.tmp_dir!()
    path = Path.join(dir, "loose_cookie_#{System.unique_integer([:positive])}")
    File.write!(path, cookie() <> "\n")
    File.chmod!(path, 0o644)
    {out, status} = System.cmd(Path.expand(binary()), ["--sname", unique_name("loose"), "--cookie-file", path],
                               stderr_to_stdout: true)
    assert status != 0
    assert out =~ "refusing cookie file"
    refute out =~ "ready"
  end

  test "--help documents every option" do
    {out, 0} = System.cmd(Path.expand(binary()), ["--help"])
    for opt <- ~w(--sname --name --cookie-file --cookie --listen --port --registered-name
                  --max-connections --max-frame-bytes --max-runs --busy-poll-us --busy-poll-pace-us
                  --log-level --help),
        do: assert(out =~ opt)
  end

  test "a silent handshake is dropped at the deadline", %{info: i} do
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, i.port, [:binary, active: false])
    # the deadline is 7 s; 30 s is only the bound of a loaded machine
    assert closed?(s, 30_000) == true
  end
end
