DROP TABLE mail_warmup;
