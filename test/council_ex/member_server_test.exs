defmodule CouncilEx.MemberServerTest do
  use ExUnit.Case, async: true

  alias CouncilEx.MemberServer
  alias CouncilEx.Test.{EchoMember, ErrorMember, RaisingMember}

  test "run_call/3 maps returns, errors and raises to the reply sent to the run" do
    emit = fn chunk -> send(self(), {:chunk, chunk}) && :ok end
    assert {:ok, "echo: \"q\""} = MemberServer.run_call(EchoMember, %{"input" => "q"}, emit)
    assert_received {:chunk, "echo "}
    assert_received {:chunk, "says"}
    assert {:error, "member exploded"} = MemberServer.run_call(RaisingMember, %{}, emit)
    assert {:error, "no_model"} = MemberServer.run_call(ErrorMember, %{}, emit)
  end

  # The test process plays the run: it sends the member calls the C node
  # would send and receives the tokens and replies.
  test "serves {:council_member_call, ...} per docs/protocol.md" do
    server = MemberServer.start_for_run!(%{"echo" => EchoMember, "boom" => RaisingMember}, [self()])

    send(server, {:council_member_call, self(), 7, %{"member_id" => "echo", "input" => 1}})
    assert_receive {:council_member_token, 7, "echo "}
    assert_receive {:council_member_token, 7, "says"}
    assert_receive {:council_member_reply, 7, {:ok, "echo: 1"}}

    send(server, {:council_member_call, self(), 8, %{"member_id" => "boom"}})
    assert_receive {:council_member_reply, 8, {:error, "member exploded"}}

    send(server, {:council_member_call, self(), 9, %{"member_id" => "nobody"}})
    assert_receive {:council_member_reply, 9, {:error, "no Elixir module for member \"nobody\""}}

    send(
      server,
      {:council_member_call, self(), 10,
       %{"options" => %{"module" => "Elixir.CouncilEx.Test.EchoMember"}}}
    )

    assert_receive {:council_member_reply, 10, {:ok, _}}
  end

  test "stops when its run ends" do
    run = spawn(fn -> receive do: (:stop -> :ok) end)
    server = MemberServer.start_for_run!(%{"echo" => EchoMember}, [])
    ref = Process.monitor(server)
    MemberServer.attach(server, run)
    send(run, :stop)
    assert_receive {:DOWN, ^ref, :process, ^server, :normal}
  end
end
