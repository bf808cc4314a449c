defmodule CouncilEx.Nif do
  @moduledoc """
  The C core inside this VM, as a NIF (`priv/council_nif.so`, built from
  `c_src/nif/council_nif.c`): the first slice of the `backend: :nif`
  option, with no C node and no distribution.

  The core runs on a thread of its own; every function here only queues a
  request for it and waits for the answer in a `receive`, so no scheduler
  ever blocks on the core. Events reach subscribers as plain messages with
  the same terms the C node sends (`docs/protocol.md`, "Events"), and
  `await/2` answers as the C node's `:await` does, so code written against
  the raw protocol reads both alike.

  What this slice does not do yet: runs are not processes (they are named
  by run id), `beam` members and Elixir tools need the C node, and a
  subscriber that dies stays subscribed until its run ends.

      iex> spec = ~s({"id":"nif","members":[{"id":"a","provider":"mock"}],"rounds":[{"type":"independent_analysis"}]})
      iex> {:ok, id} = CouncilEx.Nif.start(spec, "2+2?", subscribe: [])
      iex> {:ok, %{final: final}} = CouncilEx.Nif.await(id)
      iex> final =~ "a: independent_analysis"
      true
  """

  @timeout 15_000

  @doc """
  Starts a run of `spec_json` (a council spec as JSON text) on `input` (any
  term; a binary is also the text members see). Options: `:run_id` (a
  binary; generated when absent), `:registry` (a binary; the default
  registry when absent), `:subscribe` (pids that get every event, from
  `run_started` on). Returns `{:ok, run_id}` or `{:error, reason}`
  (`:invalid_spec`, `:already_started`, `:unknown_provider`, `:limit`,
  `:too_big`, `:badarg`).
  """
  @spec start(binary, term, keyword) :: {:ok, binary} | {:error, atom}
  def start(spec_json, input, opts \\ []) when is_binary(spec_json) do
    call(fn ->
      start_nif(
        spec_json,
        input,
        Keyword.get(opts, :run_id, ""),
        Keyword.get(opts, :registry),
        Keyword.get(opts, :subscribe, [])
      )
    end)
  end

  @doc """
  Waits for the run to end and returns its outcome: `{:ok, result}`,
  `{:error, {:failed, errors, result}}`, `{:error, {:cancelled, result}}`;
  a run that has ended already answers at once while it is retained.
  `{:error, :not_found}` for an unknown run, `{:error, :timeout}` after
  `:timeout` ms (default `:infinity`).
  """
  @spec await(binary, keyword) :: {:ok, map} | {:error, term}
  def await(run_id, opts \\ []) do
    call(fn -> await_nif(run_id, Keyword.get(opts, :registry)) end, Keyword.get(opts, :timeout, :infinity))
  end

  @doc "Cancels the run: `:ok` (also for a finished run) or `{:error, :not_found}`."
  @spec cancel(binary, keyword) :: :ok | {:error, :not_found}
  def cancel(run_id, opts \\ []), do: call(fn -> cancel_nif(run_id, Keyword.get(opts, :registry)) end)

  @doc "The run's summary (`{:ok, map}`, as the C node's `:state`) or `{:error, :not_found}`."
  @spec state(binary, keyword) :: {:ok, map} | {:error, :not_found}
  def state(run_id, opts \\ []), do: call(fn -> state_nif(run_id, Keyword.get(opts, :registry)) end)

  @doc "Subscribes the calling process to the run's events: `:ok` or `{:error, reason}`."
  @spec subscribe(binary, keyword) :: :ok | {:error, atom}
  def subscribe(run_id, opts \\ []),
    do: call(fn -> subscribe_nif(run_id, Keyword.get(opts, :registry)) end)

  defp call(request, timeout \\ @timeout) do
    :ok = ensure_loaded()
    ref = request.()

    receive do
      {^ref, reply} -> reply
    after
      timeout -> {:error, :timeout}
    end
  end

  @doc """
  Loads the NIF library (once per VM; later calls return `:ok`).
  `{:error, reason}` when `priv/council_nif.so` is missing or cannot load.
  """
  @spec ensure_loaded() :: :ok | {:error, term}
  def ensure_loaded do
    case :persistent_term.get({__MODULE__, :loaded}, false) do
      true ->
        :ok

      false ->
        :global.trans({__MODULE__, self()}, fn -> load() end, [node()])
    end
  end

  defp load do
    path = Application.app_dir(:council_ex, "priv/council_nif")

    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok -> :persistent_term.put({__MODULE__, :loaded}, true)
      {:error, {:reload, _}} -> :persistent_term.put({__MODULE__, :loaded}, true)
      {:error, reason} -> {:error, reason}
    end
  end

  defp start_nif(_spec, _input, _run_id, _registry, _subscribers), do: :erlang.nif_error(:not_loaded)
  defp await_nif(_run_id, _registry), do: :erlang.nif_error(:not_loaded)
  defp cancel_nif(_run_id, _registry), do: :erlang.nif_error(:not_loaded)
  defp state_nif(_run_id, _registry), do: :erlang.nif_error(:not_loaded)
  defp subscribe_nif(_run_id, _registry), do: :erlang.nif_error(:not_loaded)
end
