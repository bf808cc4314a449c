# The C node against a real BEAM: ping, calls, monitors, links, load.
Code.require_file("support.exs", __DIR__)

defmodule CNode.BasicTest do
  use ExUnit.Case, async: false
  import CNodeTest

  setup_all do
    info = start_node()
    on_exit(fn -> stop_node(info) end)
    {:ok, info: info}
  end

  test "Node.ping returns :pong", %{info: i} do
    assert Node.ping(i.node) == :pong
    assert i.node in Node.list(:hidden)
  end

  test "ping and stats calls on the registered service", %{info: i} do
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
    s = stats(i.node)
    for k <- [:connections, :processes, :links, :monitors], do: assert(is_integer(s[k]))
    assert s.connections >= 1
    assert s.processes == 2
  end

  test "an unknown call gets {:error, {:unknown_call, summary}}, never the request", %{info: i} do
    svc = {:council_ex, i.node}
    req = {:whatever, [1, 2.5, "bin", %{a: 1}], make_ref(), self()}
    assert GenServer.call(svc, req) == {:error, {:unknown_call, :whatever}}
    assert GenServer.call(svc, :bogus) == {:error, {:unknown_call, :bogus}}
    assert GenServer.call(svc, {"tag", 1}) == {:error, {:unknown_call, :tuple}}
    assert GenServer.call(svc, %{a: 1}) == {:error, {:unknown_call, :map}}
    assert GenServer.call(svc, [1, 2]) == {:error, {:unknown_call, :list}}
    assert GenServer.call(svc, "x") == {:error, {:unknown_call, :binary}}
    assert GenServer.call(svc, 7) == {:error, {:unknown_call, :integer}}
    assert GenServer.call(svc, self()) == {:error, {:unknown_call, :pid}}
  end

  test "an unknown call with a 1 MB term gets a reply under 1 KB", %{info: i} do
    # 1 MB of atoms and binaries: the reply names the request's tag only
    atoms = for k <- 1..20_000, do: :"atom_#{rem(k, 500)}"
    big = {:big, :crypto.strong_rand_bytes(800_000), atoms}
    assert :erlang.external_size(big) > 1_000_000
    reply = GenServer.call({:council_ex, i.node}, big, 60_000)
    assert reply == {:error, {:unknown_call, :big}}
    assert :erlang.external_size(reply) < 1024
  end

  test "a cast and a plain send are accepted without a reply", %{info: i} do
    GenServer.cast({:council_ex, i.node}, :anything)
    send({:council_ex, i.node}, {:hello, self()})
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
  end

  test "a node with a long name still monitors its subscribers" do
    # a reference of this node carries its name: it must fit the buffers
    # that keep monitor refs (the subscriber's, the member server's)
    sname = unique_name("cn_long_" <> String.duplicate("n", 60))
    info = start_node(sname: sname)
    try do
      sub = spawn(fn -> receive do :stop -> :ok end end)
      assert GenServer.call({:council_ex, info.node}, {:subscribe, "council_ex:run:x", sub}) == :ok
      assert stats(info.node).subscriptions == 1
      send(sub, :stop)
      assert wait_until(fn -> stats(info.node).subscriptions == 0 end)
    after
      stop_node(info)
    end
  end

  test "monitoring a pid that does not exist gives DOWN :noproc", %{info: i} do
    pid = make_pid(i.node, 999_999, i.creation)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, :noproc}, 10_000
  end

  test "a pid of another creation is a dead process", %{info: i} do
    # num 2 is the council_ex service, but under another incarnation
    pid = make_pid(i.node, 2, i.creation + 1)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, :noproc}, 10_000
    # at once, not after the call's 30 s timeout (a wide margin for a
    # loaded machine)
    {t, res} = :timer.tc(fn -> catch_exit(GenServer.call(pid, :ping, 30_000)) end)
    assert {:noproc, _} = res
    assert t < 10_000_000
  end

  test "monitoring a name that does not exist gives DOWN :noproc", %{info: i} do
    ref = Process.monitor({:no_such_name, i.node})
    assert_receive {:DOWN, ^ref, :process, {:no_such_name, _}, :noproc}, 10_000
  end

  test "a call to a missing name exits :noproc promptly", %{info: i} do
    # at once, not after the call's 30 s timeout
    {t, res} = :timer.tc(fn -> catch_exit(GenServer.call({:nope, i.node}, :ping, 30_000)) end)
    assert {:noproc, {GenServer, :call, _}} = res
    assert t < 10_000_000
  end

  test "a call by pid to the service works (alias reply)", %{info: i} do
    pid = make_pid(i.node, 2, i.creation)
    assert GenServer.call(pid, :ping) == :pong
    # nothing else came of it: the node answers a second call after
    # anything the first one sent, over the same connection
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
    refute_received _
  end

  test "1000 calls from 8 concurrent callers are all answered", %{info: i} do
    results =
      1..8
      |> Task.async_stream(fn _ -> for _ <- 1..125, do: GenServer.call({:council_ex, i.node}, :ping) end,
        max_concurrency: 8, timeout: 60_000)
      |> Enum.flat_map(fn {:ok, l} -> l end)
    assert length(results) == 1000
    assert Enum.all?(results, &(&1 == :pong))
    # every call's monitor was removed by its DEMONITOR_P
    assert wait_until(fn -> stats(i.node).monitors == 1 end)
  end

  test "monitors are removed on DEMONITOR_P", %{info: i} do
    before = stats(i.node).monitors
    refs = for _ <- 1..10, do: Process.monitor({:council_ex, i.node})
    assert stats(i.node).monitors == before + 10
    Enum.each(refs, &Process.demonitor/1)
    assert wait_until(fn -> stats(i.node).monitors == before end)
  end

  test "link, unlink (UNLINK_ID acked) and link to a missing pid", %{info: i} do
    Process.flag(:trap_exit, true)
    svc = make_pid(i.node, 2, i.creation)
    true = Process.link(svc)
    assert wait_until(fn -> stats(i.node).links == 1 end)
    true = Process.unlink(svc)
    assert wait_until(fn -> stats(i.node).links == 0 end)
    ghost = make_pid(i.node, 424_242, i.creation)
    true = Process.link(ghost)
    assert_receive {:EXIT, ^ghost, :noproc}, 10_000
    Process.flag(:trap_exit, false)
  end

  test "a disconnect leaves no monitors or links behind", %{info: i} do
    # a second BEAM-side connection: a raw client that monitors and links
    {:ok, s, name} = raw_connect(i.port, cookie())
    me = raw_pid(name, 1)
    svc = make_pid(i.node, 2, i.creation)
    for k <- 1..5 do
      raw_send(s, {19, me, :council_ex, make_ref()})
      raw_send(s, {19, me, svc, make_ref()})
      _ = k
    end
    raw_send(s, {1, me, svc})
    assert wait_until(fn -> st = stats(i.node); st.monitors == 11 and st.links == 1 end)
    :gen_tcp.close(s)
    assert wait_until(fn -> st = stats(i.node); st.monitors == 1 and st.links == 0 end)
    # the BEAM node's own connection: monitors gone after Node.disconnect
    refs = for _ <- 1..5, do: Process.monitor({:council_ex, i.node})
    assert stats(i.node).monitors == 6
    Node.disconnect(i.node)
    for r <- refs, do: assert_receive({:DOWN, ^r, :process, _, :noconnection}, 10_000)
    assert wait_until(fn -> st = stats(i.node); st.monitors == 1 and st.links == 0 end)
  end

  test "sys.get_state is answered with an error, not a hang", %{info: i} do
    res = try do
      :sys.get_state({:council_ex, i.node}, 15_000)
    catch
      kind, r -> {kind, r}
    end
    assert res == {:error, {:unknown_system_msg, :get_state}}
  end
end
