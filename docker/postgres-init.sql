-- Run once by the postgres image on an empty volume: the MLflow store lives beside Prefect's database.
CREATE DATABASE mlflow OWNER esvr;
