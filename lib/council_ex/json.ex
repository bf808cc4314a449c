defmodule CouncilEx.JSON do
  @moduledoc """
  JSON through jiffy (the Debian `erlang-jiffy` OTP application): objects
  decode to maps with binary keys, `null` is `nil` both ways.

      iex> CouncilEx.JSON.decode(~s({"a": [1, null]}))
      {:ok, %{"a" => [1, nil]}}
  """

  @doc "Encodes a term (maps with atom or binary keys, lists, scalars) as a JSON binary."
  @spec encode(term) :: {:ok, binary} | {:error, term}
  def encode(term) do
    {:ok, IO.iodata_to_binary(:jiffy.encode(term, [:use_nil]))}
  catch
    kind, reason when kind in [:error, :throw] -> {:error, unwrap(reason)}
  end

  @doc "Like `encode/1`; raises `ArgumentError` when the term has no JSON form."
  @spec encode!(term) :: binary
  def encode!(term) do
    case encode(term) do
      {:ok, json} -> json
      {:error, reason} -> raise ArgumentError, "cannot encode as JSON: #{inspect(reason)}"
    end
  end

  @doc "Decodes a JSON binary."
  @spec decode(binary) :: {:ok, term} | {:error, term}
  def decode(json) when is_binary(json) do
    {:ok, :jiffy.decode(json, [:return_maps, :use_nil])}
  catch
    kind, reason when kind in [:error, :throw] -> {:error, unwrap(reason)}
  end

  defp unwrap({:error, reason}), do: reason
  defp unwrap(reason), do: reason
end
