defmodule CouncilEx.Test.EchoMember do
  @moduledoc "A member that streams two chunks and answers with the input."
  @behaviour CouncilEx.Member

  @impl true
  def call(request, emit) do
    emit.("echo ")
    emit.("says")
    {:ok, "echo: " <> inspect(request["input"])}
  end
end

defmodule CouncilEx.Test.UserOptsMember do
  @moduledoc "A member that answers with the run's user_opts."
  @behaviour CouncilEx.Member

  @impl true
  def call(request, _emit), do: {:ok, inspect(request["user_opts"])}
end

defmodule CouncilEx.Test.UserOptsCouncil do
  @moduledoc "One Elixir-module member that reads the run's user_opts."
  use CouncilEx

  member :opts, provider: CouncilEx.Test.UserOptsMember
  round :independent_analysis
end

defmodule CouncilEx.Test.CallersMember do
  @moduledoc "A member that answers with the `$callers` of the process serving its call."
  @behaviour CouncilEx.Member

  @impl true
  def call(_request, _emit), do: {:ok, inspect(Process.get(:"$callers"))}
end

defmodule CouncilEx.Test.CallersCouncil do
  @moduledoc "One Elixir-module member that tells the `$callers` it sees."
  use CouncilEx

  member :callers, provider: CouncilEx.Test.CallersMember
  round :independent_analysis
end

defmodule CouncilEx.Test.RaisingMember do
  @moduledoc "A member that raises."
  @behaviour CouncilEx.Member

  @impl true
  def call(_request, _emit), do: raise("member exploded")
end

defmodule CouncilEx.Test.ErrorMember do
  @moduledoc "A member that answers an error."
  @behaviour CouncilEx.Member

  @impl true
  def call(_request, _emit), do: {:error, :no_model}
end

defmodule CouncilEx.Test.MockCouncil do
  @moduledoc "Three mock members, analysis, anonymized review, vote, chair."
  use CouncilEx

  member :alpha, provider: :mock, latency_ms: 5, chunks: 2
  member :beta, provider: :mock, latency_ms: 10, chunks: 3
  member :gamma, provider: :mock, latency_ms: 1
  round :independent_analysis
  round :anonymized_peer_review
  round :vote
  chair :alpha
  limits member_timeout_ms: 5_000, max_attempts: 2, backoff_ms: 10, concurrency: 8
end

defmodule CouncilEx.Test.QuickCouncil do
  @moduledoc "Two mock members, one round: for load tests."
  use CouncilEx

  member :a, provider: :mock, chunks: 2
  member :b, provider: :mock
  round :independent_analysis
end

defmodule CouncilEx.Test.SlowCouncil do
  @moduledoc "Members that take long enough to cancel or kill mid-run."
  use CouncilEx

  member :slow, provider: :mock, latency_ms: 3_000, chunks: 3
  member :slower, provider: :mock, latency_ms: 4_000
  round :independent_analysis
  round :vote
  limits member_timeout_ms: 30_000
end

defmodule CouncilEx.Test.FailingCouncil do
  @moduledoc "Every member fails every attempt: the run fails."
  use CouncilEx

  member :x, provider: :mock, fail_attempts: [1, 2, 3]
  round :independent_analysis
  limits max_attempts: 2, backoff_ms: 1
end

defmodule CouncilEx.Test.BeamCouncil do
  @moduledoc "Elixir-module members next to a mock one."
  use CouncilEx

  member :echo, provider: CouncilEx.Test.EchoMember
  member :boom, provider: CouncilEx.Test.RaisingMember
  member :mock, provider: :mock
  round :independent_analysis
  limits max_attempts: 1, member_timeout_ms: 5_000
end

defmodule CouncilEx.Test.Helpers do
  @moduledoc "Helpers for the C node tests."

  @event_tags [:run_started, :round_started, :member_started, :member_token, :member_completed,
                :round_completed, :tool_call_request, :tool_call_result]

  @doc """
  Collects events of `run_id` until its terminal event (or timeout). Only
  event tuples are taken: a test's own message that names the run (e.g.
  `{:done, run_id, ...}` from another subscriber, which may come before
  this process's terminal event) stays in the mailbox.
  """
  def collect_events(run_id, timeout \\ 15_000, acc \\ []) do
    receive do
      {tag, ^run_id, _} = ev when tag in [:run_completed, :run_cancelled] ->
        Enum.reverse([ev | acc])

      {:run_failed, ^run_id, _, _} = ev ->
        Enum.reverse([ev | acc])

      ev when is_tuple(ev) and elem(ev, 0) in @event_tags and elem(ev, 1) == run_id ->
        collect_events(run_id, timeout, [ev | acc])
    after
      timeout -> {:timeout, Enum.reverse(acc)}
    end
  end

  @doc """
  Waits until `fun` returns truthy (polling), or fails. The default
  deadline (20 s) is generous: the C node under test is the ASan build and
  CI machines may be loaded; a passing condition returns at once.
  """
  def eventually(fun, tries \\ 400, sleep \\ 50) do
    case fun.() do
      falsy when falsy in [nil, false] ->
        if tries <= 1,
          do: raise("condition never held"),
          else:
            (
              Process.sleep(sleep)
              eventually(fun, tries - 1, sleep)
            )

      value ->
        value
    end
  end

  @doc """
  The name of the managed C node that replaced the one of OS pid
  `old_os_pid`, once it is up (`CouncilEx.Node.info/0`: the first node of
  the pool). It has the old one's name: a member of the pool keeps its
  name across restarts. Up to 60 s (the ASan build on a loaded machine).
  """
  def wait_restarted(old_os_pid) do
    eventually(
      fn ->
        case CouncilEx.Node.info() do
          %{status: :up, os_pid: p, node: n} when is_integer(p) and p != old_os_pid -> n
          _ -> nil
        end
      end,
      1_200,
      50
    )
  end

  @doc """
  Spawns a process (on this node: call it through `:erpc` to have it on
  another) that subscribes to `topic` (`CouncilEx.PubSub.subscribe/1`),
  sends `{:subscribed, pid, result}` to `to`, then forwards every message
  it gets as `{:forwarded, pid, message}` until it is sent `:stop`.
  Returns its pid.
  """
  def spawn_forwarder(topic, to) do
    spawn(fn ->
      send(to, {:subscribed, self(), CouncilEx.PubSub.subscribe(topic)})
      forward_to(to)
    end)
  end

  defp forward_to(to) do
    receive do
      :stop -> :ok
      m -> send(to, {:forwarded, self(), m}) && forward_to(to)
    end
  end

  @doc "A unique run id for a test."
  def run_id(prefix \\ "t"), do: "#{prefix}-#{System.unique_integer([:positive])}"

  @doc """
  The events of run `id` in this process's mailbox, in order, up to its
  terminal one (fails after 10 s without it).
  """
  def run_events(id, acc \\ []) do
    receive do
      {t, ^id, _} = e when t in [:run_completed, :run_cancelled] -> Enum.reverse([e | acc])
      {:run_failed, ^id, _, _} = e -> Enum.reverse([e | acc])
      e when is_tuple(e) and elem(e, 1) == id -> run_events(id, [e | acc])
    after
      10_000 -> ExUnit.Assertions.flunk("no terminal event: #{inspect(Enum.reverse(acc))}")
    end
  end

  @doc """
  Waits until `pid` is blocked in a GenServer.call (in gen:do_call's
  receive): its request has been sent by then, so what the caller of this
  function sends to the same node afterwards arrives after it. Orders
  "another process calls" before "this process acts" without a sleep.
  """
  def wait_calling(pid) do
    eventually(fn ->
      Process.info(pid, [:status, :current_function]) ==
        [status: :waiting, current_function: {:gen, :do_call, 4}]
    end)
  end

  @doc """
  A council whose run cannot end before the calling process opens its
  gate (`open_gate/0`): member `gate` (`CouncilEx.Test.GateMember`) waits
  for it, next to two mock members, in one round. For tests that need the
  run's pid alive after the start reply (calls, links) whatever the load.
  """
  def gated_council do
    CouncilEx.DynamicCouncil.to_spec!(%{
      id: "gated",
      members: [
        %{id: :gate, provider: CouncilEx.Test.GateMember,
          owner: List.to_string(:erlang.pid_to_list(self()))},
        %{id: :a, provider: :mock, chunks: 2},
        %{id: :b, provider: :mock}
      ],
      rounds: [%{type: :independent_analysis}]
    })
  end

  @doc "Lets the gate member of a `gated_council/0` run answer."
  def open_gate(timeout \\ 15_000) do
    receive do
      {:gate_waiting, member} -> send(member, :gate_open)
    after
      timeout -> raise "no gate member waiting after #{timeout} ms"
    end

    :ok
  end
end

defmodule CouncilEx.Test.GateMember do
  @moduledoc """
  A member that answers only when its owner (option `owner`, a local pid
  as text) opens the gate: it sends `{:gate_waiting, self()}` to the owner
  and waits for `:gate_open` (an error if the owner dies first).
  """
  @behaviour CouncilEx.Member

  @impl true
  def call(request, _emit) do
    owner = request["options"]["owner"] |> String.to_charlist() |> :erlang.list_to_pid()
    ref = Process.monitor(owner)
    send(owner, {:gate_waiting, self()})

    receive do
      :gate_open -> {:ok, "the gate opened"}
      {:DOWN, ^ref, :process, _, _} -> {:error, "gate owner gone"}
    end
  end
end

defmodule CouncilEx.Test.ParentCouncil do
  @moduledoc "A council with a sub-council member (provider council)."
  use CouncilEx

  member :panel, provider: :council, spec: CouncilEx.Test.QuickCouncil
  member :solo, provider: :mock
  round :independent_analysis
  round :vote
  chair :solo
end
