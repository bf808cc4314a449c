defmodule CouncilEx.OtpWireTest do
  # The distribution wire of OTP 26 and 27, spoken by hand over a raw TCP
  # socket to the running C node (only OTP 25 is installed here): the
  # handshake with the flags those releases send, then their control
  # messages, with pids, references and creations in the forms they use
  # (32-bit creation, full 32-bit pid ID and serial, 5-word references:
  # DFLAG_V4_NC), UNLINK_ID with a 64-bit id, alias sends, ticks. What the
  # node supports and does with the rest: docs/otp-compat.md. Flag values:
  # erts/emulator/beam/dist.h and the distribution protocol reference of
  # erlang/otp.
  use ExUnit.Case, async: false
  import Bitwise
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only

  # --------------------------------------------------------------- flags

  @published 0x1
  @extended_references 0x4
  @dist_monitor 0x8
  @fun_tags 0x10
  @dist_monitor_name 0x20
  @new_fun_tags 0x80
  @extended_pids_ports 0x100
  @export_ptr_tag 0x200
  @bit_binaries 0x400
  @new_floats 0x800
  @unicode_io 0x1000
  @dist_hdr_atom_cache 0x2000
  @small_atom_tags 0x4000
  @utf8_atoms 0x10000
  @map_tag 0x20000
  @big_creation 0x40000
  @send_sender 0x80000
  @big_seqtrace_labels 0x100000
  @exit_payload 0x400000
  @fragments 0x800000
  @handshake_23 0x1000000
  @unlink_id 0x2000000
  @mandatory_25_digest 0x4000000
  @spawn 0x1 <<< 32
  @v4_nc 0x4 <<< 32
  @alias 0x8 <<< 32
  # OTP 28's, unknown to OTP 26/27 and to the node
  @altact_sig 0x20 <<< 32

  @mandatory_25 @extended_references ||| @fun_tags ||| @extended_pids_ports |||
                  @utf8_atoms ||| @new_fun_tags ||| @big_creation ||| @new_floats |||
                  @map_tag ||| @export_ptr_tag ||| @bit_binaries ||| @handshake_23
  @mandatory_26 @v4_nc ||| @unlink_id

  # DFLAG_DIST_DEFAULT of OTP 26 and 27 (the same set: 27 added no flag):
  # what such a node sends in its 'N' name message, PUBLISHED added for a
  # visible node.
  @otp26_27_default @mandatory_25 ||| @mandatory_26 ||| @dist_monitor |||
                      @dist_monitor_name ||| @spawn ||| @alias ||| @unicode_io |||
                      @dist_hdr_atom_cache ||| @small_atom_tags ||| @send_sender |||
                      @big_seqtrace_labels ||| @exit_payload ||| @fragments |||
                      @mandatory_25_digest

  # ------------------------------------------------------ control codes

  @link 1
  @send 2
  @exit 3
  @reg_send 6
  @monitor_p 19
  @demonitor_p 20
  @monitor_p_exit 21
  @send_sender_op 22
  @spawn_request 29
  @alias_send 33
  @unlink_id_op 35
  @unlink_id_ack 36

  # A creation as OTP 26/27 get them from epmd: 32 bits, above 2^31 here.
  @creation 0xF00D1234

  @spec_json ~s({"id":"wire","members":[{"id":"a","provider":"mock","options":{"latency_ms":300}},) <>
               ~s({"id":"b","provider":"mock"}],"rounds":[{"type":"independent_analysis"},{"type":"vote"}]})

  setup do
    {:ok, node} = CouncilEx.Node.await()
    [name, host] = node |> Atom.to_string() |> String.split("@")
    {:port, port, _version} = :erl_epmd.port_please(String.to_charlist(name), String.to_charlist(host))
    %{node: node, host: host, port: port, cookie: Atom.to_string(Node.get_cookie())}
  end

  # ------------------------------------------------------------ the tests

  test "OTP 26: handshake of a visible node, then calls, a run's events, LINK + UNLINK_ID, MONITOR_P",
       ctx do
    me = peer_name("otp26", ctx)
    {sock, hs} = handshake!(ctx, me, @otp26_27_default ||| @published)

    # What the node answers is what OTP 26/27 require of a peer: every
    # flag mandatory in 25 and 26, and the digest flag; it is hidden.
    assert (hs.flags &&& @mandatory_25) == @mandatory_25
    assert (hs.flags &&& @mandatory_26) == @mandatory_26
    assert (hs.flags &&& @mandatory_25_digest) != 0
    assert (hs.flags &&& @published) == 0
    assert hs.creation > 0 and hs.creation <= 0xFFFFFFFF
    assert hs.name == Atom.to_string(ctx.node)

    from = pid(me, 0x12345678, 0x9ABCDEF0)
    from_bytes = ext(from)

    # A GenServer call as OTP 26 makes it: REG_SEND with '' as the unused
    # element, the reply tag an alias ([alias | Ref], a 5-word reference).
    alias_ref = ref(me, [0xFFFFFFFF, 0x80000001, 3, 4, 5])
    send_ctl(sock, {@reg_send, from, :"", :council_ex}, {:"$gen_call", {from, [:alias | alias_ref]}, :ping})
    {ctl, payload, raw} = recv_ctl!(sock, &match?({@alias_send, _, _}, &1))
    assert {@alias_send, _node_pid, ^alias_ref} = ctl
    assert payload == {[:alias | alias_ref], :pong}
    # the reference goes back byte for byte (5 words, 32-bit creation)
    assert :binary.match(raw, ext(alias_ref)) != :nomatch

    # A run subscribed by our pid (full 32-bit ID and serial).
    id = "wire26-#{System.unique_integer([:positive])}"
    call_ref = ref(me, [7, 8, 9, 10, 11])
    start = %{spec: @spec_json, input: "2+2?", run_id: id, subscribe: [from]}
    send_ctl(sock, {@reg_send, from, :"", :council_ex}, {:"$gen_call", {from, [:alias | call_ref]}, {:start, start}})
    {_, {[:alias | ^call_ref], {:ok, run}}, _} = recv_ctl!(sock, &match?({@alias_send, _, ^call_ref}, &1))
    assert is_pid(run) and node(run) == ctx.node

    # LINK, then the new link protocol's unlink with the largest id
    send_ctl(sock, {@link, from, run})
    unlink_id = (1 <<< 64) - 1
    send_ctl(sock, {@unlink_id_op, unlink_id, from, run})
    assert {{@unlink_id_ack, ^unlink_id, ^run, ^from}, nil, _} =
             recv_ctl!(sock, &match?({@unlink_id_ack, _, _, _}, &1))

    mref = ref(me, [21, 22, 23])
    send_ctl(sock, {@monitor_p, from, run, mref})

    # events: SEND to our pid, its bytes exactly as we sent them
    {ctl, {:run_started, ^id, "wire", "2+2?"}, raw} =
      recv_ctl!(sock, &match?({@send, _, _}, &1), &match?({:run_started, _, _, _}, &1))

    assert {@send, _, ^from} = ctl
    assert :binary.match(raw, from_bytes) != :nomatch

    {_, {:run_completed, ^id, %{final: final}}, _} =
      recv_ctl!(sock, &match?({@send, _, _}, &1), &match?({:run_completed, _, _}, &1))

    assert is_binary(final)

    # the run's end: DOWN for the monitor, no EXIT for the link we removed
    {{@monitor_p_exit, ^run, ^from, ^mref, _reason}, nil, _} =
      recv_ctl!(sock, &match?({@monitor_p_exit, _, _, _, _}, &1))

    refute Enum.any?(seen(), &match?({@exit, ^run, ^from, _}, &1))

    :gen_tcp.close(sock)
  end

  test "OTP 27: a hidden node with flags the node does not know; ticks, SEND_SENDER, alias sends, DEMONITOR_P",
       ctx do
    me = peer_name("otp27", ctx)
    unknown = @altact_sig ||| 1 <<< 45 ||| 0x8000000
    {sock, hs} = handshake!(ctx, me, @otp26_27_default ||| unknown)
    # the unknown flags are not echoed: flags are an intersection
    assert (hs.flags &&& unknown) == 0

    from = pid(me, 0xFFFFFFFF, 0xFFFFFFFF)
    id = "wire27-#{System.unique_integer([:positive])}"
    call_ref = ref(me, [1, 2, 3, 4, 5])
    start = %{spec: @spec_json, input: "q", run_id: id}
    send_ctl(sock, {@reg_send, from, :"", :council_ex}, {:"$gen_call", {from, [:alias | call_ref]}, {:start, start}})
    {_, {_, {:ok, run}}, _} = recv_ctl!(sock, &match?({@alias_send, _, ^call_ref}, &1))

    # a tick (an empty frame) is nothing
    :ok = :gen_tcp.send(sock, <<>>)

    # a message to an alias the node never made is dropped, and the
    # connection stays
    send_ctl(sock, {@alias_send, from, ref(me, [99, 98, 97, 96, 95])}, :hello)

    # SEND_SENDER (what OTP sends once DFLAG_SEND_SENDER is agreed; the
    # node does not offer it, and accepts it anyway)
    q = ref(me, [31, 32, 33, 34, 35])
    send_ctl(sock, {@send_sender_op, from, run}, {:"$gen_call", {from, [:alias | q]}, :run_id})
    {_, {[:alias | ^q], ^id}, _} = recv_ctl!(sock, &match?({@alias_send, _, ^q}, &1))

    # monitor then demonitor: no DOWN when the run ends
    mref = ref(me, [41, 42, 43])
    send_ctl(sock, {@monitor_p, from, run, mref})
    send_ctl(sock, {@demonitor_p, from, run, mref})
    mref2 = ref(me, [51, 52, 53, 54, 55])
    send_ctl(sock, {@monitor_p, from, run, mref2})

    {_, nil, _} = recv_ctl!(sock, &match?({@monitor_p_exit, _, _, ^mref2, _}, &1))
    refute Enum.any?(seen(), &match?({@monitor_p_exit, _, _, ^mref, _}, &1))

    # still served on the same connection
    p = ref(me, [61, 62, 63])
    send_ctl(sock, {@reg_send, from, :"", :council_ex}, {:"$gen_call", {from, [:alias | p]}, :ping})
    {_, {_, :pong}, _} = recv_ctl!(sock, &match?({@alias_send, _, ^p}, &1))
    :gen_tcp.close(sock)
  end

  test "a control message of a capability the node did not offer (SPAWN_REQUEST) closes that connection only",
       ctx do
    me = peer_name("otp27s", ctx)
    {sock, _hs} = handshake!(ctx, me, @otp26_27_default)
    from = pid(me, 1, 0)
    req = ref(me, [1, 2, 3])
    send_ctl(sock, {@spawn_request, req, from, from, {:erlang, :apply, 2}, []}, [])
    assert {:error, :closed} = recv_until_closed(sock)
    # the node goes on serving others
    assert CouncilEx.Node.call(:ping) == :pong
  end

  test "a peer without a flag OTP 25 made mandatory is refused (as OTP refuses it)", ctx do
    me = peer_name("old", ctx)
    {:ok, sock} = connect(ctx)
    # without the digest too, which would stand for the missing flag
    send_name(sock, me, (@otp26_27_default ||| @published) &&& ~~~(@bit_binaries ||| @mandatory_25_digest))
    assert recv_status(sock) == "not_allowed"
    :gen_tcp.close(sock)
  end

  # OTP's own test (dist_handshake_SUITE:dflag_mandatory_25): a peer may
  # send DFLAG_MANDATORY_25_DIGEST instead of the flags it stands for, and
  # an OTP 25+ acceptor answers "ok".
  test "DFLAG_MANDATORY_25_DIGEST stands for the flags mandatory in OTP 25", ctx do
    me = peer_name("digest", ctx)
    {:ok, sock} = connect(ctx)
    send_name(sock, me, @mandatory_25_digest ||| @mandatory_26)
    assert recv_status(sock) == "ok"
    :gen_tcp.close(sock)
  end

  # ------------------------------------------------------------ helpers

  defp peer_name(prefix, ctx), do: "#{prefix}_#{System.unique_integer([:positive])}@#{ctx.host}"

  # External terms of a node that is not this VM, built from their bytes
  # (NEW_PID_EXT, NEWER_REFERENCE_EXT) as OTP 26/27 encode them.
  defp pid(node, id, serial) do
    :erlang.binary_to_term(<<131, 88, atom_ext(node)::binary, id::32, serial::32, @creation::32>>)
  end

  defp ref(node, words) do
    ids = for w <- words, into: <<>>, do: <<w::32>>
    :erlang.binary_to_term(<<131, 90, length(words)::16, atom_ext(node)::binary, @creation::32, ids::binary>>)
  end

  defp atom_ext(name), do: <<119, byte_size(name), name::binary>>

  # a term's encoding without the version byte (UTF-8 atoms, as OTP 26+)
  defp ext(term) do
    <<131, rest::binary>> = :erlang.term_to_binary(term, minor_version: 2)
    rest
  end

  defp connect(ctx) do
    :gen_tcp.connect({127, 0, 0, 1}, ctx.port, [:binary, active: false, packet: 2], 5_000)
  end

  defp send_name(sock, me, flags) do
    :ok = :gen_tcp.send(sock, <<?N, flags::64, @creation::32, byte_size(me)::16, me::binary>>)
  end

  defp recv_status(sock) do
    case :gen_tcp.recv(sock, 0, 5_000) do
      {:ok, <<?s, status::binary>>} -> status
      {:error, :closed} -> :closed
      other -> other
    end
  end

  # The initiator's side of the version 6 handshake, as OTP 26/27 run it.
  defp handshake!(ctx, me, flags) do
    {:ok, sock} = connect(ctx)
    send_name(sock, me, flags)
    assert recv_status(sock) == "ok"

    {:ok, <<?N, node_flags::64, challenge::32, creation::32, nlen::16, name::binary-size(nlen)>>} =
      :gen_tcp.recv(sock, 0, 5_000)

    ours = :rand.uniform(0xFFFFFFFF)
    :ok = :gen_tcp.send(sock, <<?r, ours::32, digest(ctx.cookie, challenge)::binary>>)
    {:ok, <<?a, ack::binary-size(16)>>} = :gen_tcp.recv(sock, 0, 5_000)
    assert ack == digest(ctx.cookie, ours)
    :ok = :inet.setopts(sock, packet: 4)
    {sock, %{flags: node_flags, creation: creation, name: name}}
  end

  defp digest(cookie, challenge), do: :erlang.md5([cookie, Integer.to_string(challenge)])

  # A pass-through frame: 'p', the control tuple, the payload if any.
  defp send_ctl(sock, ctl, payload \\ :none) do
    body = [?p, :erlang.term_to_binary(ctl, minor_version: 2)]
    body = if payload == :none, do: body, else: [body, :erlang.term_to_binary(payload, minor_version: 2)]
    :ok = :gen_tcp.send(sock, body)
  end

  # The frame whose control tuple matches (and whose payload matches
  # `pay?`, when given), from those read earlier and not taken yet, else
  # from the socket: {ctl, payload | nil, raw frame}. Every control tuple
  # read is logged (seen/0).
  defp recv_ctl!(sock, want?, pay? \\ nil) do
    buf = Process.get(:wire_buf, [])
    ok? = fn {ctl, payload, _} -> want?.(ctl) and (pay? == nil or pay?.(payload)) end

    case Enum.split_while(buf, &(not ok?.(&1))) do
      {before, [hit | after_]} ->
        Process.put(:wire_buf, before ++ after_)
        hit

      {_, []} ->
        frame = next_frame(sock)

        if ok?.(frame) do
          frame
        else
          Process.put(:wire_buf, buf ++ [frame])
          recv_ctl!(sock, want?, pay?)
        end
    end
  end

  defp next_frame(sock) do
    case :gen_tcp.recv(sock, 0, 20_000) do
      {:ok, ""} ->
        next_frame(sock)

      {:ok, <<?p, rest::binary>> = raw} ->
        {ctl, used} = :erlang.binary_to_term(rest, [:used])
        <<_::binary-size(used), more::binary>> = rest
        payload = if more == "", do: nil, else: :erlang.binary_to_term(more)
        Process.put(:wire_log, [ctl | Process.get(:wire_log, [])])
        {ctl, payload, raw}

      other ->
        flunk("no matching frame: #{inspect(other)}; seen: #{inspect(seen())}")
    end
  end

  defp seen, do: Enum.reverse(Process.get(:wire_log, []))

  defp recv_until_closed(sock) do
    case :gen_tcp.recv(sock, 0, 10_000) do
      {:ok, _frame} -> recv_until_closed(sock)
      other -> other
    end
  end
end
