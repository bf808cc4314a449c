defmodule CouncilEx.Nif do
  @moduledoc """
  The C core inside this VM, as a NIF (`priv/council_nif.so`, built from
  `c_src/nif/`): the backend of `config :council_ex, backend: :nif`, with
  no C node, no second OS process and no distribution.

  The library uses it for you (`CouncilEx.start/3` and the rest of the API
  work the same with either backend, see `CouncilEx.Backend`); this module
  is its raw protocol, the same requests and replies as the C node's
  registered service (docs/protocol.md), for code that wants them:

      iex> spec = ~s({"id":"nif","members":[{"id":"a","provider":"mock"}],"rounds":[{"type":"independent_analysis"}]})
      iex> {:ok, pid} = CouncilEx.Nif.start(%{spec: spec, input: "2+2?", subscribe: [self()]})
      iex> is_pid(pid)
      true
      iex> receive do
      ...>   {:run_completed, _run_id, %{final: final}} -> final =~ "a: independent_analysis"
      ...> end
      true

  How it works: the core runs as several contexts ("shards", `shards/0`:
  four per scheduler by default), each on a thread of its own (created
  when the library loads; `CouncilEx.Nif.Server` opens the contexts when
  the application starts and closes them, cancelling every run, when it
  stops); a run lives in the shard its run id names. A call here that
  finds its shard free (that thread asleep, nothing queued), or free
  within 20 µs, carries its request out on its own scheduler and returns
  the answer, stepping the core for at most 40 µs after it; otherwise it
  copies the request into a queue for that thread and waits for the
  answer in a `receive`, so no scheduler waits for the core longer. Events
  go to subscriber pids with `enif_send`, as the same terms the C node
  sends: from the scheduler that drives the core, or, for what the core's
  thread makes, from a process of the NIF's on its scheduler
  (`CouncilEx.Nif.Pump`, one per VM, which the thread hands its messages
  in order through a queue; a send from a thread that is not a scheduler
  costs the VM about twice the CPU). Each run is a pid: a
  tiny process (`CouncilEx.Nif.Run`) that holds the run's handle and hands
  calls to the core; the run's state lives in the core.
  """

  alias CouncilEx.Nif.Run

  @timeout 15_000

  # The library is loaded with the module, so that a new version of this
  # module takes the running core over (the NIF's upgrade callback) and
  # purging the last one stops it (unload). A library that cannot load
  # (e.g. `priv/council_nif.so` not built) does not keep the module from
  # loading: `loaded?/0` is false and requests give `:unavailable`.
  @on_load :on_load

  @doc false
  def on_load do
    _ = load()
    :ok
  end

  @doc """
  A request of the C node's service (docs/protocol.md, "The registered
  service"), answered the same way: `{:whereis, registry, run_id}`,
  `{:state, registry, run_id}`, `{:result, registry, run_id}`,
  `{:cancel, registry, run_id}`, `{:subscribe, topic, pid}`,
  `{:subscribe, topic, pid, :tagged}`, `{:unsubscribe, topic, pid}`,
  `:stats`, `:ping`. Also `{:subscribe, topic, pid, :lib}`: events as the
  library's subscribers get them (round names as existing atoms, see
  `CouncilEx.PubSub`); `{:inline, false}` / `{:inline, true}`: whether a
  call may carry its request out on its own scheduler (on by default; off,
  every request goes through the core's thread: for tests and
  measurements), and `:inline`: `{:ok, n}`, the requests carried out so
  far. Starts go through `start/1` and `start_link/1`.

  `{:error, :unavailable}` when the NIF is not loaded or its context is
  closed (the application is not running); `{:error, :timeout}` after
  `timeout` ms.
  """
  @spec call(term, timeout) :: term
  def call(request, timeout \\ @timeout)

  # A live run is answered from the NIF's index on this scheduler (its
  # summary as of its last round change); others by the core's thread.
  def call({op, _registry, _run_id} = request, timeout) when op in [:whereis, :state] do
    case fast(request) do
      :miss -> queued(request, timeout)
      reply -> reply
    end
  end

  # An open context gets the pump (below) that sends the events of the
  # core's threads (without one, those threads send them themselves).
  def call({:open, _} = request, timeout) do
    with :ok <- each_shard(request, timeout) do
      ensure_pump()
      :ok
    end
  end

  # Requests about every shard (the NIF runs several core contexts,
  # c_src/nif/nif.h): sent to all of them, their answers combined. A
  # :ping is answered once every shard has carried out what was queued on
  # it before.
  def call(request, timeout)
      when request in [:close, :ping, :stats, :inline] or
             (is_tuple(request) and tuple_size(request) == 2 and
                elem(request, 0) in [:setenv, :unsetenv, :inline]),
      do: each_shard(request, timeout)

  def call(request, timeout), do: queued(request, timeout)

  # The NIF call carries the request out itself when it can drive the
  # core at once (the shard's thread is asleep) and returns its reply;
  # otherwise the request is queued for the shard's thread, which answers
  # {ref, reply}. (No fun here: a fun of this module made before a code
  # upgrade runs the new code's, whose NIFs are not loaded until its
  # on_load has run.)
  defp queued(request, timeout) do
    answer(call_nif(request), timeout)
  catch
    # not loaded, or being unloaded
    :error, _ -> {:error, :unavailable}
  end

  # The request to shard k: {:reply, reply} when carried out at once, a
  # reference to wait for, or {:reply, {:error, :unavailable}}.
  defp on_shard(k, request) do
    call_on_nif(k, request)
  catch
    :error, _ -> {:reply, {:error, :unavailable}}
  end

  defp answer({:reply, reply}, _timeout), do: reply

  defp answer(ref, timeout) do
    receive do
      {^ref, reply} -> reply
    after
      timeout -> {:error, :timeout}
    end
  end

  # Sent to every shard first, then the answers awaited, all by one
  # deadline (a timeout is the whole call's, not each shard's).
  defp each_shard(request, timeout) do
    case shards() do
      0 ->
        {:error, :unavailable}

      n ->
        deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout
        combine(await_all(send_all(0, n, request), deadline), request)
    end
  end

  defp send_all(n, n, _request), do: []
  defp send_all(k, n, request), do: [on_shard(k, request) | send_all(k + 1, n, request)]

  defp await_all([], _deadline), do: []

  defp await_all([sent | rest], deadline) do
    left = if deadline == :infinity, do: :infinity, else: max(deadline - now_ms(), 0)
    [answer(sent, left) | await_all(rest, deadline)]
  end

  defp now_ms, do: System.monotonic_time(:millisecond)

  # The shards' answers as one: the first error if any shard gave one;
  # stats and the inline count summed.
  defp combine([first | rest] = answers, request) when request in [:stats, :inline] do
    case Enum.find(answers, &(not match?({:ok, _}, &1))) do
      nil -> {:ok, Enum.reduce(rest, elem(first, 1), &sum(elem(&1, 1), &2))}
      error -> error
    end
  end

  defp combine([first | _] = answers, _request),
    do: Enum.find(answers, first, &(&1 not in [:ok, :pong]))

  defp sum(a, b) when is_map(a), do: Map.merge(a, b, fn _k, x, y -> x + y end)
  defp sum(a, b), do: a + b

  @doc """
  How many core contexts ("shards") the NIF drives side by side: four per
  scheduler thread (at most 64) unless `COUNCIL_NIF_SHARDS` (1..64) was
  set when the library loaded; 0 when it is not loaded. A run lives in
  the shard its run id names.
  """
  @spec shards() :: non_neg_integer
  def shards do
    shards_nif()
  catch
    :error, _ -> 0
  end

  @doc false
  # The shard of a run id (tests).
  def shard_of(run_id) when is_binary(run_id), do: shard_of_nif(run_id)

  @doc """
  Starts a run from the C node's start options (docs/protocol.md, "start
  options": `:spec` (JSON), `:input`, `:run_id`, `:council`, `:registry`,
  `:user_opts`, `:subscribe`, `:member_server`): `{:ok, run_pid}` or
  `{:error, reason}` as the C node answers.
  """
  @spec start(map) :: {:ok, pid} | {:error, term}
  def start(opts) when is_map(opts), do: start_run(:start, opts)

  @doc "As `start/1`, with the run linked to the caller before it begins."
  @spec start_link(map) :: {:ok, pid} | {:error, term}
  def start_link(opts) when is_map(opts), do: start_run(:start_link, opts)

  @doc false
  # The run's pid is spawned here (linked for :start_link, so the link
  # exists before the run begins), then handed to the core with the
  # request; a start that fails takes it back.
  @spec start_run(:start | :start_link, map) :: {:ok, pid} | {:error, term}
  def start_run(how, opts) when how in [:start, :start_link] do
    pid = Run.spawn(how, Map.get(opts, :member_server))

    case start_call({how, opts, pid}, pid) do
      {:ok, ^pid} = ok ->
        ok

      other ->
        if how == :start_link, do: CouncilEx.Backend.unlink_flush(pid)
        Process.exit(pid, :kill)
        other
    end
  end

  # The start's answer: the NIF call's own when it carried the start out
  # (inline); else a refusal comes from the core's thread, the {:ok, pid}
  # of a start that began from the run's pid (Run.init/2). A pid killed
  # before it could answer (it is the run's once the run is indexed:
  # whereis finds it) leaves no answer to wait for: a call made after the
  # start (:ping, to every shard, the start's among them) is answered after
  # any answer the core's thread gave the start (it is queued behind it, or
  # carried out inline once the queue and the outbox are empty), so none by
  # then means the run began, and the start answers
  # with its pid as the core's thread did (the run is cancelled at the
  # pid's DOWN); no :pong, the library is going: :unavailable. The monitor
  # is set after the call: a pid already gone gives its DOWN at once.
  defp start_call(request, pid) do
    case call_nif(request) do
      {:reply, reply} -> reply
      ref -> await_start(ref, pid, Process.monitor(pid))
    end
  catch
    # not loaded, or being unloaded
    :error, _ -> {:error, :unavailable}
  end

  defp await_start(ref, pid, mon) do
    receive do
      {^ref, reply} ->
        Process.demonitor(mon, [:flush])
        reply

      {:DOWN, ^mon, :process, ^pid, _} ->
        began = each_shard(:ping, :infinity) == :pong

        receive do
          {^ref, reply} -> reply
        after
          0 -> if began, do: {:ok, pid}, else: {:error, :unavailable}
        end
    end
  end

  @doc "Whether the NIF library is loaded in this VM (by this module's current code)."
  @spec loaded?() :: boolean
  def loaded? do
    run_id_nif(nil)
  rescue
    # the NIF's answer to a bad argument
    ArgumentError -> true
    # the stub's
    _ -> false
  end

  @doc """
  `:ok` when the NIF library is loaded, else tries once more to load it:
  `{:error, reason}` when `priv/council_nif.so` is missing or cannot load.
  """
  @spec ensure_loaded() :: :ok | {:error, term}
  def ensure_loaded do
    if loaded?(), do: :ok, else: load()
  end

  defp load do
    case :erlang.load_nif(String.to_charlist(path()), 0) do
      :ok -> :ok
      {:error, {:reload, _}} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  @doc """
  The library loaded (without its `.so`): `COUNCIL_NIF` when set (e.g.
  `build/asan/council_nif` for the tests under AddressSanitizer, with the
  ASan runtime preloaded, see `scripts/run-beam-tests`), else
  `council_nif` in the application's priv dir.
  """
  @spec path() :: Path.t()
  def path do
    case {System.get_env("COUNCIL_NIF"), :code.priv_dir(:council_ex)} do
      {path, _} when path not in [nil, ""] -> Path.rootname(Path.expand(path), ".so")
      {_, {:error, _}} -> Path.expand("../../priv/council_nif", __DIR__)
      {_, dir} -> Path.join(List.to_string(dir), "council_nif")
    end
  end

  # ------------------------------------------------------- the pump

  # The pump (CouncilEx.Nif.Pump, below) of the open context: started once
  # per VM, given to the NIF after each open (a close drops it).
  defp ensure_pump do
    pump_set_nif(CouncilEx.Nif.Pump.whereis())
  catch
    # being unloaded
    :error, _ -> :ok
  end

  @doc false
  # The pump's call: sends for at most 40 µs, :more while messages are left.
  def pump, do: pump_nif()

  # ------------------------------------------------------- run processes

  @doc false
  # :ok, or {:reply, reply} when the NIF call carried the request out
  # itself and has the answer (the run's pid replies to `from` with it);
  # else the answer comes as {:"$council_reply", from, reply}.
  def run_call(run, from, request), do: run_call_nif(run, from, request)
  @doc false
  def run_info(run, message), do: run_info_nif(run, message)
  @doc false
  def run_stop(run, reason), do: run_stop_nif(run, reason)
  @doc false
  def run_id(run), do: run_id_nif(run)
  @doc false
  # {version, reply} (cached itself while its version is current), or
  # :miss, also when the library is not loaded: the caller asks the core
  # (which says so).
  def run_state(run, cached) do
    run_state_nif(run, cached)
  catch
    :error, _ -> :miss
  end

  defp fast(request) do
    fast_nif(request)
  catch
    :error, _ -> :miss
  end

  # The ETF decoder of the library's own terms (c_src/nif/nif_term.c,
  # nif_etf_test and nif_etf_bench say what these answer): for the tests
  # and bench/etf_decode.exs.
  @doc false
  def etf_test(request), do: etf_test_nif(request)
  @doc false
  def etf_bench(etf, n), do: etf_bench_nif(etf, n)

  defp call_nif(_request), do: :erlang.nif_error(:not_loaded)
  defp call_on_nif(_shard, _request), do: :erlang.nif_error(:not_loaded)
  defp shards_nif, do: :erlang.nif_error(:not_loaded)
  defp shard_of_nif(_run_id), do: :erlang.nif_error(:not_loaded)
  defp run_call_nif(_run, _from, _request), do: :erlang.nif_error(:not_loaded)
  defp run_info_nif(_run, _message), do: :erlang.nif_error(:not_loaded)
  defp run_stop_nif(_run, _reason), do: :erlang.nif_error(:not_loaded)
  defp run_id_nif(_run), do: :erlang.nif_error(:not_loaded)
  defp run_state_nif(_run, _cached), do: :erlang.nif_error(:not_loaded)
  defp fast_nif(_request), do: :erlang.nif_error(:not_loaded)
  defp pump_nif, do: :erlang.nif_error(:not_loaded)
  defp pump_set_nif(_pid), do: :erlang.nif_error(:not_loaded)
  defp etf_test_nif(_request), do: :erlang.nif_error(:not_loaded)
  defp etf_bench_nif(_etf, _n), do: :erlang.nif_error(:not_loaded)
end

defmodule CouncilEx.Nif.Pump do
  @moduledoc false
  # A process that sends, on its scheduler, the messages the core's thread
  # leaves in the NIF's outbox (c_src/nif/nif_outbox.c): events, mostly,
  # since an enif_send from a thread that is not a scheduler costs the VM
  # about twice the CPU. Told once per batch ({:"$council_pump"}), it calls
  # CouncilEx.Nif.pump/0 (at most 40 µs each) until it answers :done. One
  # per VM, registered under this name and not linked to whoever opened the
  # context; it shares the application's group leader, so the
  # application's stop ends it with the application's other processes.
  # The NIF monitors it and sends from its thread again if it goes (the
  # next open starts another). Its code is not CouncilEx.Nif's,
  # so that an upgrade of that module can purge the old version.

  @doc false
  def whereis do
    case Process.whereis(__MODULE__) do
      nil -> start()
      pid -> pid
    end
  end

  defp start do
    pid = spawn(&__MODULE__.loop/0)

    try do
      Process.register(pid, __MODULE__)
      pid
    rescue
      # another one was registered first
      ArgumentError ->
        Process.exit(pid, :kill)
        whereis()
    end
  end

  @doc false
  def loop do
    receive do
      :"$council_pump" -> drain()
      _ -> :ok
    end

    __MODULE__.loop()
  end

  defp drain do
    case CouncilEx.Nif.pump() do
      :more -> drain()
      :done -> :ok
    end
  end
end
